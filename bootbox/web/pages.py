"""The pages for people: the operator's console (:mod:`bootbox.web.console`), served under
``/ui/`` with its host list at ``/`` too, so the appliance's address opens it."""

from __future__ import annotations

from flask import Blueprint, Response, redirect, url_for
from flask.blueprints import BlueprintSetupState

from bootbox.errors import Unauthorized
from bootbox.web import console
from bootbox.web.console import hosts

blueprint = Blueprint("pages", __name__)


@blueprint.record_once
def _install_console(state: BlueprintSetupState) -> None:
    console.install(state.app)


@blueprint.get("/")
def index() -> str:
    return hosts.hosts()


@blueprint.errorhandler(Unauthorized)
def _login_first(exc: Unauthorized) -> Response:
    """``/`` with ``[http] read_token`` set and no login: the login page, not a JSON error."""
    return redirect(url_for("console.login"), code=303)
