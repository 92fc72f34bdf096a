"""crossgap.safe_pickle: the one restricted unpickler every pickle crossgap reads goes through."""

from __future__ import annotations

import codecs
import os
import pickle

import numpy as np
import pytest

from crossgap.safe_pickle import UnsafePickleError, restricted_load, restricted_loads


class RunsCode:
    def __reduce__(self):  # unpickling calls os.system("...")
        return (os.system, ("echo pwned > /dev/null",))


def test_plain_data_and_numpy_arrays_load():
    data = {"imlist": ["a", "b"], "gnd": [{"easy": np.array([1, 2]), "bbx": [1.0, 2.0, 3.0, 4.0]}], "n": 3}
    out = restricted_loads(pickle.dumps(data))
    assert out["imlist"] == ["a", "b"] and out["n"] == 3
    assert out["gnd"][0]["easy"].tolist() == [1, 2]


def test_a_pickle_carrying_a_callable_is_refused_naming_the_file_and_global(tmp_path):
    path = tmp_path / "gnd_roxford5k.pkl"
    path.write_bytes(pickle.dumps({"x": RunsCode()}))
    with pytest.raises(UnsafePickleError, match=r"gnd_roxford5k.pkl: refusing to load global (posix|os)\.system"):
        restricted_load(path)


def test_allow_list_can_be_narrowed_to_plain_data_only():
    with pytest.raises(UnsafePickleError, match="numpy"):
        restricted_loads(pickle.dumps(np.arange(3)), "summaries.pkl", allowed=())


def test_truncated_pickle_is_a_clear_error():
    with pytest.raises(UnsafePickleError, match="cut.pkl: not a readable pickle"):
        restricted_loads(pickle.dumps({"a": list(range(100))})[:20], "cut.pkl")


def test_20_newsgroups_cache_with_a_callable_is_refused(tmp_path):
    from crossgap.datasets.errors import DatasetLayoutError
    from crossgap.datasets.text_corpora import CACHE_FILE, NewsgroupTextAdapter

    folder = tmp_path / "20newsgroups"
    folder.mkdir()
    (folder / CACHE_FILE).write_bytes(codecs.encode(pickle.dumps({"test": RunsCode()}), "zlib_codec"))
    with pytest.raises(DatasetLayoutError, match="refusing to load global"):
        NewsgroupTextAdapter()._read_cache(folder)


def test_summaries_pickle_with_a_callable_is_refused(tmp_path):
    from crossgap.datasets.longtext import LongTextError, load_summaries

    path = tmp_path / "imdb.pkl"
    path.write_bytes(pickle.dumps({"a": RunsCode()}))
    with pytest.raises(LongTextError, match="refusing to load global"):
        load_summaries(path)
