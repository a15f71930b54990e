import numpy as np
import pytest

from anomaly.batch import Batch, BatchError
from anomaly.engine import DeviceModel, Engine


def test_unequal_columns_name_the_column():
    with pytest.raises(BatchError, match="field 'power_total_w'"):
        Batch(
            np.zeros(2, np.int32),
            np.zeros(2, np.int64),
            np.ones(2, bool),
            {"power_total_w": np.zeros(3)},
        )


def test_out_of_range_device_index_is_rejected_by_the_engine():
    eng = Engine([DeviceModel("m", "electricity", 1.0)])
    bad = Batch(np.array([0, 5], np.int32), np.array([1, 2], np.int64), np.ones(2, bool), {})
    with pytest.raises(BatchError, match="device_idx holds 5"):
        eng.process(bad)


def test_from_records_and_concat_fill_missing_fields_with_nan():
    a = Batch.from_records([(0, 10, True, {"x": 1.0}), (1, 11, False, {"y": 2.0})])
    assert np.isnan(a.fields["x"][1]) and a.fields["y"][1] == 2.0
    b = Batch.from_records([(0, 12, True, {"z": 3.0})])
    c = Batch.concat([a, b])
    assert len(c) == 3
    assert set(c.fields) == {"x", "y", "z"}
    assert np.isnan(c.fields["z"][0]) and c.fields["z"][2] == 3.0
    assert c.ok.tolist() == [True, False, True]
