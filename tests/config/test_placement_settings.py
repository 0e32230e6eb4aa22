"""`[fleet.placement]`: defaults, values read, every bad value a SettingsError naming its key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from trelay.config.placement_settings import ClientNetwork, PlacementSettings
from trelay.config.settings import load_settings
from trelay.config.values import SettingsError

FLEET = '[fleet]\nredis_url = "redis://127.0.0.1"\n'


def placement_of(tmp_path: Path, text: str) -> PlacementSettings:
    path = tmp_path / "trelay.toml"
    path.write_text(FLEET + text)
    fleet = load_settings(path).fleet
    assert fleet is not None
    return fleet.placement


def test_defaults(tmp_path: Path) -> None:
    placement = placement_of(tmp_path, "")
    assert placement == PlacementSettings()
    assert (placement.count, placement.refresh_seconds) == (2, 1.0)
    assert placement.neighbours_of("eu") == ()


def test_a_full_placement_section(tmp_path: Path) -> None:
    placement = placement_of(
        tmp_path,
        "[fleet.placement]\ncount = 3\nrefresh_seconds = 0.5\n"
        'trusted_proxies = ["10.0.0.0/8", "fd00::/8"]\n'
        '[fleet.placement.neighbours]\neu-central = ["eu-west", "us-east"]\nus-east = ["eu-west"]\n'
        '[[fleet.placement.client_networks]]\ncidr = "203.0.113.0/24"\nregion = "eu-central"\n'
        '[[fleet.placement.client_networks]]\ncidr = "203.0.113.128/25"\nregion = "eu-west"\n',
    )
    assert (placement.count, placement.refresh_seconds) == (3, 0.5)
    assert placement.neighbours_of("eu-central") == ("eu-west", "us-east")
    assert placement.neighbours_of("us-east") == ("eu-west",)
    assert placement.client_networks == (
        ClientNetwork(ipaddress.ip_network("203.0.113.0/24"), "eu-central"),
        ClientNetwork(ipaddress.ip_network("203.0.113.128/25"), "eu-west"),
    )
    assert [str(n) for n in placement.trusted_proxies] == ["10.0.0.0/8", "fd00::/8"]


def test_placement_without_a_redis_url_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trelay.toml"
    path.write_text("[fleet.placement]\ncount = 2\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    assert caught.value.key == "fleet.redis_url"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[fleet.placement]\ncount = 0\n", "fleet.placement.count"),
        ("[fleet.placement]\ncount = 17\n", "fleet.placement.count"),
        ('[fleet.placement]\ncount = "2"\n', "fleet.placement.count"),
        ("[fleet.placement]\nrefresh_seconds = 0\n", "fleet.placement.refresh_seconds"),
        ("[fleet.placement]\nsurprise = 1\n", "fleet.placement.surprise"),
        (
            '[fleet.placement]\ntrusted_proxies = ["10.0.0.0/33"]\n',
            "fleet.placement.trusted_proxies[0]",
        ),
        ('[fleet.placement]\ntrusted_proxies = "10.0.0.0/8"\n', "fleet.placement.trusted_proxies"),
        (
            '[fleet.placement.neighbours]\n"eu central" = ["us"]\n',
            "fleet.placement.neighbours.eu central",
        ),
        ('[fleet.placement.neighbours]\neu = "us"\n', "fleet.placement.neighbours.eu"),
        ('[fleet.placement.neighbours]\neu = ["us", "u s"]\n', "fleet.placement.neighbours.eu[1]"),
        ('[fleet.placement.neighbours]\neu = ["eu"]\n', "fleet.placement.neighbours.eu"),
        ('[fleet.placement.neighbours]\neu = ["us", "us"]\n', "fleet.placement.neighbours.eu"),
        (
            '[[fleet.placement.client_networks]]\ncidr = "203.0.113.0/99"\nregion = "eu"\n',
            "fleet.placement.client_networks[0].cidr",
        ),
        (
            '[[fleet.placement.client_networks]]\ncidr = "203.0.113.0/24"\nregion = "e/u"\n',
            "fleet.placement.client_networks[0].region",
        ),
        (
            '[[fleet.placement.client_networks]]\ncidr = "203.0.113.0/24"\n',
            "fleet.placement.client_networks[0].region",
        ),
        (
            '[[fleet.placement.client_networks]]\ncidr = "203.0.113.0/24"\nregion = "eu"\nx = 1\n',
            "fleet.placement.client_networks[0].x",
        ),
        (
            '[[fleet.placement.client_networks]]\ncidr = "203.0.113.0/24"\nregion = "eu"\n'
            '[[fleet.placement.client_networks]]\ncidr = "203.0.113.0/24"\nregion = "us"\n',
            "fleet.placement.client_networks[1].cidr",
        ),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(SettingsError) as caught:
        placement_of(tmp_path, text)
    assert caught.value.key == key


def test_the_same_network_twice_for_one_region_is_kept_once(tmp_path: Path) -> None:
    placement = placement_of(
        tmp_path,
        '[[fleet.placement.client_networks]]\ncidr = "203.0.113.0/24"\nregion = "eu"\n'
        '[[fleet.placement.client_networks]]\ncidr = "203.0.113.7/24"\nregion = "eu"\n',
    )
    assert len(placement.client_networks) == 1
