import msgspec
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from fastproxy.security.geo import GeoDB, Geofence

ES = {"country": {"iso_code": "ES", "names": {"en": "Spain"}}, "city": {"names": {"en": "Madrid"}}}
US = {"country": {"iso_code": "US"}, "location": {"latitude": 37.75, "longitude": -97.82}}
REGISTERED_ONLY = {"registered_country": {"iso_code": "FR"}}
NO_COUNTRY = {"continent": {"code": "EU"}}


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    writer.insert_network(IPSet(["192.0.2.0/24", "2001:db8:e5::/48"]), ES)
    writer.insert_network(IPSet(["198.51.100.0/24", "2001:db8:05::/48"]), US)
    writer.insert_network(IPSet(["203.0.113.0/25"]), REGISTERED_ONLY)
    writer.insert_network(IPSet(["203.0.113.128/25"]), NO_COUNTRY)
    path = tmp_path_factory.mktemp("geo") / "city.mmdb"
    writer.to_db_file(str(path))
    return str(path)


@pytest.fixture(scope="module")
def db(db_path):
    return GeoDB(db_path)


@pytest.mark.parametrize("ip, country", [
    ("192.0.2.1", "ES"),
    ("192.0.2.255", "ES"),
    ("::ffff:192.0.2.7", "ES"),
    ("2001:db8:e5::1", "ES"),
    ("198.51.100.9", "US"),
    ("2001:db8:5:ffff::1", "US"),
    ("203.0.113.1", "FR"),       # falls back to registered_country
    ("203.0.113.200", None),     # record without a country
    ("10.0.0.1", None),          # not in the database
    ("2001:db9::1", None),
    ("not-an-ip", None),
])
def test_country_lookup(db, ip, country):
    assert db.country(ip) == country


def test_record_is_the_maxmind_record(db):
    assert db.record("192.0.2.1") == ES
    assert db.record("10.0.0.1") is None


def test_geoip_header_is_compact_json_of_the_record(db):
    header = db.geoip_header("198.51.100.9")
    assert b" " not in header
    assert msgspec.json.decode(header) == US
    assert db.geoip_header("10.0.0.1") is None
    assert db.geoip_header("198.51.100.9") is header  # cached


def test_lookup_cache_is_bounded(db_path):
    small = GeoDB(db_path, cache_size=3)
    for i in range(50):
        small.country(f"192.0.2.{i}")
    assert len(small._cache) == 3
    assert small.country("192.0.2.1") == "ES"


@pytest.mark.parametrize("kwargs, ip, permitted", [
    (dict(allow_countries=["es"]), "192.0.2.1", True),
    (dict(allow_countries=["ES"]), "198.51.100.9", False),
    (dict(allow_countries=["ES"]), "10.0.0.1", True),              # unknown defaults to allow
    (dict(allow_countries=["ES"], unknown="deny"), "10.0.0.1", False),
    (dict(allow_countries=["ES"], unknown="deny"), None, False),
    (dict(allow_countries=["ES"], unknown="deny"), "garbage", False),
    (dict(allow_countries=["ES"], unknown="deny"), "203.0.113.200", False),
    (dict(allow_countries=["fr"]), "203.0.113.1", True),
    (dict(deny_countries=["Us"]), "198.51.100.9", False),
    (dict(deny_countries=["US"]), "2001:db8:e5::1", True),
    (dict(deny_countries=["US"]), "10.0.0.1", True),
    (dict(deny_countries=["US"], unknown="deny"), "10.0.0.1", False),
    (dict(unknown="deny"), "192.0.2.1", True),
    (dict(unknown="deny"), "10.0.0.1", False),
])
def test_geofence(db, kwargs, ip, permitted):
    assert Geofence(db, **kwargs).permits(ip) is permitted


@pytest.mark.parametrize("kwargs, message", [
    (dict(allow_countries=["ES"], deny_countries=["US"]), "exclusive"),
    (dict(allow_countries=["ES"], unknown="maybe"), "invalid unknown 'maybe'"),
    (dict(deny_countries=["Spain"]), "invalid country code 'Spain'"),
])
def test_geofence_config_errors(db, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Geofence(db, **kwargs)


def test_missing_database_is_a_value_error_naming_the_path(tmp_path):
    path = str(tmp_path / "missing.mmdb")
    with pytest.raises(ValueError, match="missing.mmdb"):
        GeoDB(path)


def test_file_that_is_not_a_maxmind_database_is_a_value_error(tmp_path):
    path = tmp_path / "junk.mmdb"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(ValueError, match="junk.mmdb"):
        GeoDB(str(path))


def test_ipv4_only_database_answers_none_for_ipv6(tmp_path):
    writer = MMDBWriter(ip_version=4, database_type="GeoIP2-Country")
    writer.insert_network(IPSet(["192.0.2.0/24"]), ES)
    path = str(tmp_path / "v4.mmdb")
    writer.to_db_file(path)
    db = GeoDB(path)
    assert db.country("192.0.2.3") == "ES"
    assert db.country("::ffff:192.0.2.3") == "ES"
    assert db.country("2001:db8::1") is None
