import pytest

from bootbox.config import DEFAULT_LOADERS
from bootbox.model import Machine
from bootbox.core.policy import choose_boot, http_base_url

BASE = "http://198.18.0.1:8080"


def _decide(**kw: object):
    machine = Machine(mac="52:54:00:00:00:01", server_ip="198.18.0.1", **kw)  # type: ignore[arg-type]
    return choose_boot(machine, loaders=DEFAULT_LOADERS, next_server="198.18.0.1", base_url=BASE)


@pytest.mark.parametrize(
    ("arch", "vendor", "expected_file", "expected_class"),
    [
        (0, "PXEClient:Arch:00000:UNDI:002001", "undionly.kpxe", "PXEClient"),
        (None, "PXEClient", "undionly.kpxe", "PXEClient"),
        (7, "PXEClient:Arch:00007:UNDI:003000", "snponly.efi", "PXEClient"),
        (9, "PXEClient:Arch:00009:UNDI:003000", "snponly.efi", "PXEClient"),
        (16, "HTTPClient:Arch:00016:UNDI:003000", BASE + "/boot/loaders/snponly.efi", "HTTPClient"),
    ],
)
def test_plain_firmware_gets_a_loader(arch, vendor, expected_file, expected_class) -> None:
    spec = _decide(arch=arch, vendor_class=vendor)
    assert spec is not None
    assert spec.boot_file == expected_file
    assert spec.vendor_class == expected_class
    assert spec.next_server == "198.18.0.1"


@pytest.mark.parametrize("arch", [0, 7, 9, None])
def test_ipxe_never_gets_ipxe_again(arch) -> None:
    spec = _decide(arch=arch, vendor_class="PXEClient", user_class="iPXE", is_ipxe=True)
    assert spec is not None and spec.boot_file == BASE + "/boot.ipxe"


def test_unknown_architecture_is_not_answered() -> None:
    assert _decide(arch=11, vendor_class="PXEClient:Arch:00011:UNDI:003000") is None


def test_base_url_prefers_configured_address_then_public_url() -> None:
    machine = Machine(mac="52:54:00:00:00:01", server_ip="198.18.0.1")
    assert http_base_url(machine, server_address="", http_port=8080) == "http://198.18.0.1:8080"
    assert http_base_url(machine, server_address="198.18.1.1", http_port=80) == "http://198.18.1.1"
    assert http_base_url(machine, server_address="", http_port=8080, public_url="http://boot.lab/") == "http://boot.lab"
