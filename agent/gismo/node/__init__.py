"""``gismo node``: the node component, a kubelet device plugin that hands pods the pool.

It advertises each pool present on the node as the extended resource ``gismo.io/<pool>`` and, when a
container that asks for it starts, hands it the pool: the devdax device (a DeviceSpec, which the device
cgroup then allows) or a mount of the shm/famfs pool file. It also creates the pool files of shm pools
(only where none exists; only Gismo pool files are ever accepted, see ``gismo.memory.poolfile``).

Needs the ``node`` extra (``pip install 'gismo[node]'``: grpcio, protobuf); nothing else in ``gismo``
imports this package.

Modules: ``config`` (the validated config file), ``discovery`` (is the pool here?), ``poolfiles``
(create shm pool files), ``plugin`` (the DevicePlugin service), ``registration`` (Register with the
kubelet), ``service`` (the loop tying them together), ``proto`` (the kubelet API and its stubs).
"""
