"""The plugin contract: every hook bootbox calls, in the order a host meets them.

All hooks are named ``bootbox_*`` and are called with keyword arguments only, so an
implementation may accept any subset of the arguments (pluggy passes only those it names).
Built-in behaviour is implemented with these same hooks and registered exactly like a
third-party plugin (see ``bootbox.hooks.manager``); ``docs/plugins.md`` documents each hook with an
example, and a test fails when a hook here is missing from that page or its heading names other
arguments than the spec below.

Every hook is called through pluggy, so wrappers (``@hookimpl(wrapper=True)``), ``tryfirst`` /
``trylast`` and optional arguments behave as pluggy documents: implementations run the last
registered first. Hooks whose implementations must stay apart (start-up, the ``register_*``
hooks, shutdown, after boot) are called one plugin at a time, in that same order, through
:mod:`bootbox.hooks.calls`.

Hooks called on the boot path (script, assets) run on HTTP worker threads; an exception in a
plugin there is logged with the host's MAC and the boot falls back as if the plugin returned
``None``. After-boot hooks run on the push pool, each failure isolated, pushes retried.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from bootbox.hooks.markers import hookspec

if TYPE_CHECKING:
    from bootbox.config import Settings
    from bootbox.hooks.context import PluginContext
    from bootbox.core.hostprofile import AnswerEnv, HostProfile
    from bootbox.model import BootContext, BootEvent, Host, Profile

# --------------------------------------------------------------------------------------------
# Start-up: called once, in this order, before any server starts.
# --------------------------------------------------------------------------------------------


@hookspec
def bootbox_configure(settings: "Settings") -> None:
    """Give the plugin the appliance's settings before anything starts.

    :param settings: the validated, immutable :class:`bootbox.config.Settings`.

    Called once at start-up, after all plugins are registered. Return values are ignored; raise
    :class:`bootbox.PluginError` to refuse to start (the message is shown to the operator).
    """


@hookspec
def bootbox_startup(context: "PluginContext") -> None:
    """Hand the plugin what it may use of the running appliance.

    :param context: a :class:`bootbox.PluginContext` for this plugin only: ``settings``, its own
        ``data_dir`` (created) and ``store`` namespace, and ``record`` / ``host`` / ``hosts`` /
        ``profile`` / ``profiles`` calls into the service.

    Called once per plugin when ``bootbox serve`` starts, after ``bootbox_configure`` and before
    any server accepts a request. Keep the context; do not start threads that outlive
    ``bootbox_shutdown``.
    """


@hookspec
def bootbox_shutdown() -> None:
    """Release what ``bootbox_startup`` acquired. Called once when the appliance stops."""


@hookspec
def bootbox_register_routes(register: Callable[..., None]) -> None:
    """Add HTTP endpoints to the appliance's web app.

    :param register: call ``register(blueprint)`` with a :class:`flask.Blueprint`.

    Called once when the web app is built. Operator endpoints belong under ``/api/v1/<name>/``
    (writes there need the API token, as for every ``/api/v1`` write); endpoints that booting
    hosts use belong under ``/boot/<name>/`` and must be read-only and scoped to the asking host.
    """


@hookspec
def bootbox_register_commands(register: Callable[..., None]) -> None:
    """Add commands to the ``bootbox`` CLI.

    :param register: ``register(typer_app, name="depot")`` adds a new noun;
        ``register(function, noun="profile", name="add-vib")`` adds a verb to an existing noun.

    Called when the CLI is built. Commands should talk to the running appliance through its API:
    ``bootbox.api_client(ctx)`` returns a client bound to ``--url`` and the token.
    """


@hookspec
def bootbox_register_item_types(register: Callable[..., None]) -> None:
    """Declare rule item types beyond ``image``, ``host_profile`` and ``group``.

    :param register: ``register(name, description="...")``.

    Called once at start-up. Rules may then carry ``--item name=value`` and hosts cache the
    chosen value in their associations like the built-in item types.
    """


@hookspec
def bootbox_register_attributes(register: Callable[..., None]) -> None:
    """Declare host attributes that rule patterns may test, beyond the built-in ones.

    :param register: ``register(name, description="...")``; names are lower-case with ``_``.

    Called once at start-up. Values come from ``bootbox_host_attributes``; a rule pattern on an
    attribute nobody registered is refused with a message listing the known ones.
    """


@hookspec
def bootbox_register_profile_kinds(register: Callable[..., None]) -> None:
    """Declare the profile kinds (boot recipes) this plugin knows.

    :param register: call ``register(kind, validate=fn, description="...")`` once per kind.
        ``validate(spec: dict) -> dict`` returns the normalised spec or raises
        :class:`bootbox.ValidationError` naming the field.

    Called once at start-up. A kind registered twice is a start-up error. ``bootbox profile
    add --kind K`` and ``POST /api/v1/profiles`` refuse kinds nobody registered.
    """


@hookspec(firstresult=True)
def bootbox_demo_profile(name: str, kernel: Path, initrd: Path, cmdline: str, description: str) -> "Profile | None":
    """Offer the profile that boots bootbox's demo payload (a Linux kernel + an initramfs).

    :param name: the profile's name (``[demo] profile``).
    :param kernel: the payload's kernel image, a file on the appliance.
    :param initrd: its initramfs, a file on the appliance.
    :param cmdline: its kernel arguments without the per-host part: the payload's ``/init`` also
        needs ``bootbox.mac=<the host's MAC>`` and ``bootbox.callback=<boot.callback_url>``,
        which a kind adds for each host it boots.
    :param description: a one-line description for the profile.

    ``firstresult``: return a :class:`bootbox.Profile` of a kind you registered that boots this
    kernel, or ``None``. Called once, on the appliance's first start with ``[demo] enabled``
    (the default), after the payload is built and before any server starts; the profile is
    stored as if an operator had added it and, while there are no rules, a rule boots every host
    with it. The shipped ``linux`` plugin answers; with no answer there is no demo profile.
    """


# --------------------------------------------------------------------------------------------
# The boot decision: called when a host asks for its iPXE script.
# --------------------------------------------------------------------------------------------


@hookspec
def bootbox_host_attributes(host: "Host", params: Mapping[str, str]) -> Mapping[str, str] | None:
    """Contribute facts about a host that rules can match on.

    :param host: the host as known before this request.
    :param params: the query parameters iPXE sent (``mac``, ``uuid``, ``serial``, ...).

    Called on every script request. All results are merged into the host's attributes, later
    registered plugins overriding earlier ones; return ``None`` to add nothing.
    """


@hookspec(firstresult=True)
def bootbox_select_profile(host: "Host") -> str | None:
    """Choose the name of the profile a host boots.

    :param host: the host with its attributes and cached associations.

    ``firstresult``: the first non-``None`` name wins. The built-in deploy rules (the host's
    ``image`` association) are registered ``trylast``, so any plugin can override them.
    Returning ``None`` everywhere means the host matches nothing: it is shown the "waiting"
    script and retries.
    """


@hookspec(firstresult=True)
def bootbox_boot_script(host: "Host", profile: "Profile", boot: "BootContext") -> str | None:
    """Render the iPXE script that boots ``host`` with ``profile``.

    :param host: the host asking.
    :param profile: the chosen profile; implement this only for the ``profile.kind`` you own.
    :param boot: URLs for this host (``boot.asset_url(name)``, ``boot.callback_url``,
        ``boot.script_url`` to retry).

    ``firstresult``: return the script text (starting ``#!ipxe``) for kinds you own, ``None``
    otherwise.
    """


@hookspec(firstresult=True)
def bootbox_grub_config(host: "Host", profile: "Profile", boot: "BootContext") -> str | None:
    """Render the GRUB configuration that boots ``host`` with ``profile`` (the ``grub`` loader).

    :param host: the host asking (its GRUB fetched ``grub/hosts/<its MAC>.cfg``).
    :param profile: the chosen profile; implement this only for the ``profile.kind`` you own.
    :param boot: paths and URLs for this host: ``boot.asset_path(name)`` is a file of its profile
        on the boot server, read over the protocol GRUB came in on; ``boot.callback_url``.

    ``firstresult``: return GRUB script text for kinds you own, ``None`` otherwise
    (``bootbox.grub_linux_config`` writes the usual kernel + initrd one). Called for hosts whose
    loader is GRUB: ARM64, Secure Boot, or ``loader = grub`` (docs/firmware.md). Under Secure
    Boot the kernel must be signed; GRUB refuses anything else.
    """


# --------------------------------------------------------------------------------------------
# Serving files: called when a host fetches a file of its profile.
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def bootbox_profile_asset(host: "Host", profile: "Profile", name: str) -> Path | None:
    """Map a file name in a profile's asset URL to a regular file on disk.

    :param host: the host asking (what it boots may include packages plugins added for it).
    :param profile: the profile of the host asking (hosts only get their own profile's files).
    :param name: the last path component of ``boot.asset_url(name)``.

    ``firstresult``: return a :class:`pathlib.Path` for names you own, ``None`` otherwise. The
    HTTP server serves it with Range, ETag and Last-Modified.
    """


@hookspec
def bootbox_image_inject(image_kind: str, image_name: str, host: "Host | None") -> list[str] | None:
    """Inject packages into an image, beyond its own (an agent VIB, a monitoring ``.deb``).

    :param image_kind: the kind of image: ``esxi`` (an ESXi profile) or ``linux`` (a Linux image
        built from a Debian archive, docs/linux-images.md).
    :param image_name: the image's name (the ``esxi`` profile, or the Linux image).
    :param host: the host the image is resolved for, or ``None`` when it is built once for every
        host (Linux images): a plugin that injects per host (by group, say) injects nothing then.

    Return package names (resolved by the kind: VIB names from the imported depots, Debian
    packages from the image's archive) or absolute paths of local package files the plugin ships
    (``.deb`` for Linux images). Each plugin's answer is kept under its name (``image show``
    lists what was injected, by which plugin); the answers are concatenated in pluggy's order
    (the last registered plugin's first). Called when an image is built or a host's boot files
    are prepared, and by ``bootbox host image MAC``.
    """


# --------------------------------------------------------------------------------------------
# Answer files: what makes each host itself, rendered from its host profile and its answers.
# --------------------------------------------------------------------------------------------


@hookspec
def bootbox_register_answer_kinds(register: Callable[..., None]) -> None:
    """Declare the kinds of answer file (host-profile kinds) this plugin renders.

    :param register: ``register(kind, files=("ks.cfg",), description="...")``: ``files`` are the
        templates every host profile of the kind must have.

    Called once at start-up. A kind registered twice is a start-up error; host profiles of a
    kind nobody registered are refused. Render the kind with ``bootbox_render_answer_file``.

    That renderer is also the kind's validator: when a host profile is added or replaced
    (``bootbox hostprofile add``, the API), bootbox renders it for an example host with example
    answers (``core.hostprofile.example_answers``) and refuses it, storing nothing, when every
    set of examples fails at the same field. So check what you render and raise
    ``ValidationError`` naming the field; a renderer that fails otherwise on the example host is
    logged and does not block the profile.
    """


@hookspec
def bootbox_register_answer_inputs(register: Callable[..., None]) -> None:
    """Contribute per-host inputs to the answers of the hosts they apply to (e.g. credentials).

    :param register: ``register(name, type="string", required=True, secret=False, default=None,
        validation="", description="", applies_to=fn)``; ``applies_to(host) -> bool`` says which
        hosts are asked for it (default: all). Names are lower-case with ``_``; prefix them with
        your plugin's name.

    Called once at start-up. A host missing a required input that applies to it is held (its
    state is ``needs-answers``) like one missing its host profile's answers. Secret inputs are
    stored encrypted and masked everywhere; your ``bootbox_host_up`` gets them in clear.
    """


@hookspec(firstresult=True)
def bootbox_render_answer_file(
    kind: str, host: "Host", profile: "HostProfile", answers: Mapping[str, Any], env: "AnswerEnv"
) -> Mapping[str, str] | None:
    """Render every answer file of ``host`` for a host profile of a ``kind`` you registered.

    :param kind: the host profile's kind; return ``None`` for kinds that are not yours.
    :param host: the host (its ``associations`` carry ``host_profile`` and ``group``).
    :param profile: the :class:`bootbox.HostProfile` (templates, inputs, version).
    :param answers: the host's answers with defaults filled in (secrets in clear, or
        ``********`` in an operator's preview: ``env.masked``).
    :param env: a :class:`bootbox.AnswerEnv`: ``env.render(name)`` renders one of the profile's
        templates in bootbox's sandbox (templates see ``host``, ``group``, ``attrs``,
        ``answers`` with passwords as SHA-512 crypt hashes, and ``bootbox.up_url``,
        ``bootbox.instance_id``); ``env.up_url`` is where the host reports up.

    ``firstresult``: return ``{file name: text}``. Called when a booting host fetches an answer
    file through its single-use URL (``boot.answer_url(name)``) and by ``bootbox host render``;
    raise :class:`bootbox.ValidationError` naming the template if the result is unusable.
    """


# --------------------------------------------------------------------------------------------
# After boot: called when the booted OS reports in.
# --------------------------------------------------------------------------------------------


@hookspec
def bootbox_host_up(host: "Host", event: "BootEvent", answers: Mapping[str, Any], timeout: float) -> str | None:
    """Push configuration to (or about) a host that came up with a new boot ID.

    :param host: the host, state ``configuring``.
    :param event: the ``booted`` event with what the host reported (``ip``, ``boot_id``, ...).
    :param answers: the host's answers in clear (with defaults), including your plugin's inputs.
    :param timeout: seconds this attempt may take: pass it to your network calls.

    Each implementation is one *push*, run on the push pool (never on a request thread), with a
    timeout per attempt and retries with backoff when it raises; ``bootbox.PushRefused`` fails it
    at once. Return a short description of what you pushed (it goes on the host's timeline), or
    ``None`` if there is nothing to push for this host. When every push has succeeded the host
    is ``configured`` (``/up`` answers 200); a push that gives up makes it ``failed`` (409).
    Runs again after every reboot (new boot ID) and on ``bootbox host push MAC``.
    """


@hookspec
def bootbox_host_booted(host: "Host", event: "BootEvent") -> None:
    """Be told that a host reported in with a new boot ID (a notification, not a push).

    :param host: the host, state ``up``.
    :param event: the ``booted`` event with what the host reported (``ip``, ``boot_id``, ...).

    Every implementation runs once, on the push pool's threads, never on a protocol thread; an
    exception in one is logged as an event on the host and does not stop the others. It is not
    retried and does not change the host's state: push configuration with ``bootbox_host_up``.
    """


def documented_hooks() -> list[str]:
    """Names of every hook in this contract, for docs tests and ``bootbox plugin list``."""
    return sorted(name for name, obj in globals().items() if name.startswith("bootbox_") and callable(obj))


__all__ = ["hookspec", "documented_hooks"]
