import numpy as np
import pytest

from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema, SchemaError


def test_default_schema_factors_and_values():
    assert DEFAULT_SCHEMA.to_dict() == {
        "weather": ["clear", "overcast", "rain", "fog", "snow"],
        "time_of_day": ["day", "dusk", "night"],
        "traffic": ["light", "moderate", "heavy"],
    }
    assert DEFAULT_SCHEMA.num_combinations == 45
    assert len(DEFAULT_SCHEMA.combinations()) == 45


def test_encode_decode_roundtrip():
    cond = {"weather": "fog", "time_of_day": "night", "traffic": "heavy"}
    codes = DEFAULT_SCHEMA.encode(cond)
    assert codes == [3, 2, 2]
    assert DEFAULT_SCHEMA.decode(codes) == cond
    assert DEFAULT_SCHEMA.condition_key(cond) == "fog/night/heavy"


def test_unknown_value_lists_allowed_values():
    with pytest.raises(SchemaError) as err:
        DEFAULT_SCHEMA.encode({"weather": "hail", "time_of_day": "day", "traffic": "light"})
    msg = str(err.value)
    assert "'hail'" in msg and "weather" in msg
    for v in ["clear", "overcast", "rain", "fog", "snow"]:
        assert v in msg


def test_unknown_factor_lists_allowed_factors():
    with pytest.raises(SchemaError) as err:
        DEFAULT_SCHEMA.validate({"season": "winter"}, partial=True)
    assert "season" in str(err.value) and "time_of_day" in str(err.value)


def test_missing_factor_is_an_error_unless_partial():
    with pytest.raises(SchemaError, match="missing factor 'traffic'"):
        DEFAULT_SCHEMA.encode({"weather": "fog", "time_of_day": "day"})
    assert DEFAULT_SCHEMA.validate({"weather": "fog"}, partial=True) == {"weather": "fog"}


def test_other_schema_works_without_code_changes():
    schema = ConditionSchema.from_dict({"season": ["summer", "winter"], "road": ["urban", "highway", "rural"]})
    assert schema.cardinalities == [2, 3]
    codes = schema.encode_many(schema.combinations())
    assert codes.shape == (6, 2)
    assert np.array_equal(schema.combination_index(codes), np.arange(6))
    assert ConditionSchema.from_dict(schema.to_dict()) == schema


def test_schema_mismatch_is_reported():
    other = ConditionSchema.from_dict({"weather": ["clear", "fog"]})
    with pytest.raises(SchemaError, match="schema mismatch"):
        DEFAULT_SCHEMA.check_compatible(other)


@pytest.mark.parametrize("bad", [{}, {"w": []}, {"w": ["a", "a"]}, {"not an id": ["a"]}, {"w": "abc"}])
def test_invalid_schema_definitions(bad):
    with pytest.raises(SchemaError, match="factor|schema"):
        ConditionSchema.from_dict(bad)
