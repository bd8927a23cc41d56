"""Built-in plugins: bootbox's own behaviour, written against the same hooks as everyone's."""
