from bootbox.model import BootContext
from bootbox.core.render.ipxe import entry_script, waiting_script

EXPECTED_ENTRY = """#!ipxe
echo bootbox: fetching the boot script for ${netX/mac}
:retry
chain --replace --autofree http://198.18.0.1:8080/boot/hosts/${netX/mac:hexhyp}/script.ipxe?mac=${netX/mac}&uuid=${uuid}&serial=${serial:uristring}&asset=${asset:uristring}&manufacturer=${manufacturer:uristring}&product=${product:uristring}&buildarch=${buildarch:uristring}&platform=${platform:uristring}&ip=${netX/ip}&hostname=${hostname:uristring}&domain=${domain:uristring} || goto failed
:failed
echo bootbox: could not fetch the boot script; retrying in 10 seconds
sleep 10
goto retry
"""


def test_entry_script_golden() -> None:
    assert entry_script("http://198.18.0.1:8080/") == EXPECTED_ENTRY


def test_waiting_script_lists_attributes_and_retries_itself() -> None:
    boot = BootContext(base_url="http://198.18.0.1:8080", mac="52:54:00:00:00:01")
    script = waiting_script(boot, {"vendor": "QEMU", "serial": "", "model": "St${x}"}, "no rule gives it a profile", 60)
    assert script.splitlines() == [
        "#!ipxe",
        "echo",
        "echo bootbox: this host tried to network-boot, but no rule gives it a profile",
        "echo bootbox: its attributes (use them in a rule pattern):",
        "echo   model=St??x?",
        "echo   vendor=QEMU",
        "echo bootbox: asking again in 60 seconds",
        "sleep 60",
        "chain --replace --autofree http://198.18.0.1:8080/boot/hosts/525400000001/script.ipxe",
    ]
