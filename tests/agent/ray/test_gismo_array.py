"""gismo.rdt without a cluster: the marked array type, and the transport's registration with Ray."""

from __future__ import annotations

import numpy as np
import ray.cloudpickle
from ray.experimental.rdt.util import get_transport_data_type, transport_manager_info

import gismo.ray as gray
from gismo.rdt import TRANSPORT, GismoArray, GismoTransport


def test_shared_is_a_marked_view_not_a_copy() -> None:
    a = np.arange(10, dtype=np.int32)
    s = gray.shared(a)
    assert type(s) is GismoArray and s.ctypes.data == a.ctypes.data and s.flags.writeable
    ro = np.arange(3)
    ro.flags.writeable = False
    assert not gray.shared(ro).flags.writeable


def test_views_stay_marked_and_computed_arrays_do_not() -> None:
    s = gray.shared(np.ones((4, 4)))
    assert type(s[1:]) is GismoArray and type(s.T) is GismoArray
    assert type(s * 2) is np.ndarray and type(s + s) is np.ndarray and type(np.sqrt(s)) is np.ndarray
    assert isinstance(s.sum(), float)


def test_the_transport_is_registered_with_its_own_type_not_ndarray() -> None:
    assert TRANSPORT in transport_manager_info
    assert transport_manager_info[TRANSPORT].transport_manager_class is GismoTransport
    assert get_transport_data_type(TRANSPORT) is GismoArray
    # Ray dispatches serializers by exact type: plain arrays are never matched by GismoArray's.
    assert np.ndarray not in ray.cloudpickle.CloudPickler.dispatch
