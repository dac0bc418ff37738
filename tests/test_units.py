import pytest

from budget.units import GiB, MiB, SizeError, parse_size


@pytest.mark.parametrize("text, expected", [
    ("512MiB", 512 * MiB), ("24GiB", 24 * GiB), ("1.5GB", 1_500_000_000), ("1024", 1024), (2048, 2048),
    ("0", 0), ("3 gib", 3 * GiB), ("100M", 100_000_000), ("1.5GiB", int(1.5 * GiB)),
])
def test_sizes_people_write(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["-1GiB", "-5", "lots", "12 parsecs", "GiB", "", "1..5GB", True])
def test_bad_sizes_say_what_is_accepted(text):
    with pytest.raises(SizeError, match="512MiB"):
        parse_size(text)
