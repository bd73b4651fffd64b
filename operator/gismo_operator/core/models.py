"""The ``gismo.io/v1alpha1`` API as pydantic v2 models: the one source of truth for the CRDs.

``crdgen`` turns these classes into the CRD manifests in ``crds/``; a test fails when the committed
YAML drifts from them. The operator parses every object it reads through them, so bad input fails
once, here, with a message naming the field (pydantic's ``loc``, e.g. ``spec.capacity``).

Conventions:
- Python attribute names are snake_case; the wire names are camelCase (``alias``). Parse with
  ``GismoPool.model_validate(body)``; dump for the API with ``to_api()`` (aliases, no ``None``).
- Byte quantities (``capacity``, ``regionSize``) accept ``"64Gi"``/``"1Ti"``/integers and are held
  as ``int`` bytes once parsed; the CRD schema says int-or-string so ``kubectl apply`` accepts both.
- ``GismoSlice`` sizes and offsets are plain integer bytes (they are written by the operator, not
  typed by people, and must be exact).
- Specs forbid unknown fields (a typo is an error, not a silent no-op); statuses and metadata are
  tolerant, because the API server and other controllers may add fields there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from gismo import poolrules
from gismo.contract import DEFAULT_COHERENCE
from gismo_operator.core.quantity import QUANTITY_PATTERN, QuantityError, parse_bytes

GROUP: Final = "gismo.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "gismo.io/v1alpha1"  # GROUP/VERSION, spelled out: a Literal type below

POOL_KIND: Final = "GismoPool"

#: How a pool reaches Ray pods (``spec.access``): ask for the resource gismo.io/<pool> that the node
#: component advertises (default), or mount the pool's path as a hostPath volume.
ACCESS_DEVICE_PLUGIN: Final = "DevicePlugin"
ACCESS_HOST_PATH: Final = "HostPath"
POOL_PLURAL = "gismopools"
POOL_SINGULAR = "gismopool"
POOL_SHORT_NAMES = ["gpool"]

SLICE_KIND: Final = "GismoSlice"
SLICE_PLURAL = "gismoslices"
SLICE_SINGULAR = "gismoslice"
SLICE_SHORT_NAMES = ["gslice"]

REGION_KIND: Final = "GismoRegion"
REGION_PLURAL = "gismoregions"
REGION_SINGULAR = "gismoregion"
REGION_SHORT_NAMES = ["gregion"]

#: Kubernetes' own quantity pattern (for agent resources, where "500m" CPU is meaningful).
KUBE_QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _bytes(value: object) -> int:
    # pydantic adds the location (spec.capacity) to the error; QuantityError is a ValueError.
    return parse_bytes(value)


#: A byte count written as a Kubernetes quantity ("64Gi") or an integer; held as int bytes.
#: The schema carries only the pattern (as controller-gen does for resource.Quantity): integer
#: bounds next to x-kubernetes-int-or-string are left to the model and the validating webhook.
ByteQuantity = Annotated[
    int,
    BeforeValidator(_bytes),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
        }
    ),
]

#: A general Kubernetes quantity (CPU, memory) kept as written; the API server interprets it.
KubeQuantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": KUBE_QUANTITY_PATTERN,
        }
    ),
]


#: A Kubernetes label value (empty, or up to 63 characters of label syntax); label keys are checked by
#: the pool's model validator (a structural schema cannot constrain map keys).
LabelValue = Annotated[
    str,
    Field(
        json_schema_extra={"maxLength": poolrules.MAX_LABEL_NAME, "pattern": poolrules.LABEL_VALUE_PATTERN}
    ),
]


class _Model(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown spec fields are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The object as the API expects it: camelCase keys, JSON types, ``None`` fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Tolerant(_Model):
    model_config = ConfigDict(extra="ignore")


# --------------------------------------------------------------------------------------------------
# Shared pieces


class ObjectMeta(BaseModel):
    """The subset of ``metadata`` the operator reads; everything else is kept (``extra='allow'``)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[dict[str, Any]] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)
    deletion_timestamp: str | None = None


class LabelSelectorRequirement(_Model):
    """One ``matchExpressions`` entry, as in ``metav1.LabelSelectorRequirement``."""

    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"values: must not be empty when operator is {self.operator}")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"values: must be empty when operator is {self.operator}")
        return self


class LabelSelector(_Model):
    """A ``metav1.LabelSelector``. An empty selector matches everything (Kubernetes semantics)."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether an object with ``labels`` is selected (all terms must hold, as in Kubernetes)."""
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and not (present and labels[req.key] in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


class Condition(_Tolerant):
    """A ``metav1.Condition``: ``type`` is ``Ready`` or ``Degraded`` for pools."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: dt.datetime


# --------------------------------------------------------------------------------------------------
# GismoPool


class Backend(_Model):
    """Where the pool's bytes live on every attached node."""

    type: Literal["shm", "devdax", "famfs"] = Field(
        description="shm: a file of `capacity` bytes on a shared tmpfs (emulation); devdax: a CXL device; "
        "famfs: a famfs file of fixed size on shared CXL memory, present on every attached node."
    )
    path: str = Field(
        # In the schema only: the model's own check (below) gives the rule's message, not a regex.
        json_schema_extra={"pattern": poolrules.NORMAL_PATH_PATTERN, "maxLength": poolrules.MAX_PATH},
        description="Absolute, normalized path on the node: the shm pool file, under a folder the chart "
        "allows (default /dev/shm, e.g. /dev/shm/gismo/pool0), the DAX device (/dev/daxN.M), or the "
        "famfs file (e.g. /mnt/famfs/gismo-pool0, also under an allowed folder).",
    )
    coherence: Literal["hardware", "flush"] | None = Field(
        default=None,
        description="What the memory needs for one node to see another's stores: hardware (nothing; "
        "one host's tmpfs, CXL 3.x coherence) or flush (cache-line write-back and invalidate). "
        "Default: hardware for shm, flush for devdax and famfs.",
    )

    @property
    def effective_coherence(self) -> str:
        """``coherence``, or the backend's default (gismo.contract.DEFAULT_COHERENCE)."""
        return self.coherence or DEFAULT_COHERENCE[self.type]

    @model_validator(mode="after")
    def _path_fits_backend(self) -> Backend:
        # The folder prefixes are a setting: the webhook and the injection check those.
        problems = poolrules.path_problems(self.type, self.path, None)
        if problems:
            raise ValueError(poolrules.message(problems[:1], {"backend.path": "path"}))
        return self


class ResourceRequirements(_Model):
    """Container resources for the agent sidecar (``limits`` / ``requests``)."""

    limits: dict[str, KubeQuantity] = Field(default_factory=dict)
    requests: dict[str, KubeQuantity] = Field(default_factory=dict)


class AgentSpec(_Model):
    """How the agent sidecar is injected into the pool's Ray pods."""

    image: str | None = Field(
        default=None, min_length=1, description="Agent image; defaults to the operator's DEFAULT_AGENT_IMAGE."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    native_sidecar: bool = Field(
        default=True,
        description="Inject the agent as a native sidecar (initContainer with restartPolicy: Always); "
        "false appends it to containers instead (clusters before Kubernetes 1.29).",
    )


class GismoPoolSpec(_Model):
    """One appliance: a byte-addressable space of ``capacity`` bytes shared by the selected nodes."""

    capacity: ByteQuantity = Field(description="Total bytes of the pool, e.g. 64Gi.")
    region_size: ByteQuantity = Field(description="Bytes per Ray pod region, e.g. 1Gi; divides capacity.")
    backend: Backend
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        description="Labels of the nodes attached to the pool (Kubernetes label keys and values); empty "
        "means all nodes.",
    )
    access: Literal["DevicePlugin", "HostPath"] = Field(
        default=ACCESS_DEVICE_PLUGIN,
        description="How Ray pods reach the pool: DevicePlugin (default) asks for the resource "
        "gismo.io/<pool> that the node component (gismo node) advertises and hands over (the device, or a "
        "mount of the pool file); HostPath mounts the path directly, for clusters without the node "
        "component; pods in namespaces whose Pod Security level forbids hostPath then start without Gismo.",
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose RayClusters may use the pool; absent means all."
    )
    agent: AgentSpec = Field(default_factory=AgentSpec)

    @model_validator(mode="after")
    def _sizes_fit(self) -> GismoPoolSpec:
        if self.capacity <= 0:
            raise QuantityError("capacity: must be greater than zero")
        if self.region_size <= 0:
            raise QuantityError("regionSize: must be greater than zero")
        if self.region_size > self.capacity:
            raise ValueError(
                f"regionSize: {self.region_size} bytes is larger than capacity ({self.capacity} bytes)"
            )
        if self.capacity % self.region_size:
            raise ValueError(
                f"capacity: {self.capacity} bytes is not a multiple of regionSize ({self.region_size} bytes)"
            )
        # The one pool rule (gismo.poolrules), shared with the injection and the agent.
        problems = poolrules.region_size_problems(self.region_size, self.backend.type)
        problems += poolrules.node_selector_problems(self.node_selector)
        if problems:
            raise ValueError(poolrules.message(problems[:1]))
        return self

    @property
    def region_count(self) -> int:
        """How many regions the whole pool holds."""
        return self.capacity // self.region_size

    def admits_namespace(self, labels: dict[str, str]) -> bool:
        """Whether a namespace with ``labels`` may use the pool (no selector: every namespace)."""
        return self.namespace_selector is None or self.namespace_selector.matches(labels)


class GismoPoolStatus(_Tolerant):
    """What the operator derived from the pool's slices. Byte figures come twice: exact integers
    (``*Bytes``) for programs, and quantities (``"64Gi"``) for ``kubectl get`` columns."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    capacity: str | None = None
    allocated: str | None = None
    free: str | None = None
    largest_free_extent: str | None = None
    capacity_bytes: int | None = Field(default=None, ge=0)
    allocated_bytes: int | None = Field(default=None, ge=0)
    free_bytes: int | None = Field(default=None, ge=0)
    largest_free_extent_bytes: int | None = Field(default=None, ge=0)
    slices: int | None = Field(default=None, ge=0, description="Slices reserved in this pool.")
    regions: int | None = Field(default=None, ge=0, description="Regions assigned to pods, all slices.")
    ready: str | None = Field(default=None, description="The Ready condition's status, for kubectl columns.")


class GismoPool(_Tolerant):
    """``GismoPool`` (cluster-scoped)."""

    api_version: Literal["gismo.io/v1alpha1"] = API_VERSION
    kind: Literal["GismoPool"] = POOL_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: GismoPoolSpec
    status: GismoPoolStatus | None = None


# --------------------------------------------------------------------------------------------------
# GismoSlice


class RegionAssignment(_Model):
    """One region of a slice given to one pod. ``Reserved`` is written at admission (before the pod
    exists, so ``podUID`` may be empty: pods are created with generateName); ``Bound`` once the pod
    is seen with a UID. ``reservedAt`` lets an expired reservation be swept."""

    index: int = Field(ge=0, description="Region number inside the slice; offset = index * regionSize.")
    state: Literal["Reserved", "Bound"]
    pod_uid: str | None = Field(default=None, alias="podUID")
    pod_name: str | None = None
    node: str | None = None
    reserved_at: dt.datetime | None = None


class GismoSliceSpec(_Model):
    """A byte range of a pool reserved for one RayCluster, and the durable per-pod assignments in it."""

    pool: str = Field(min_length=1, description="Name of the GismoPool.")
    ray_cluster: str = Field(min_length=1, description="Name of the owning RayCluster (same namespace).")
    offset: int = Field(ge=0, description="First byte of the slice inside the pool.")
    size: int = Field(ge=1, description="Bytes in the slice; a multiple of regionSize.")
    region_size: int = Field(ge=1, description="Bytes per region in this slice.")
    regions: list[RegionAssignment] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["index"]},
        description="Legacy: region assignments of operators before GismoRegion objects; migrated into "
        "GismoRegions at start, then cleared. New operators never write it.",
    )

    @model_validator(mode="after")
    def _regions_fit(self) -> GismoSliceSpec:
        if self.size % self.region_size:
            raise ValueError(f"size: {self.size} is not a multiple of regionSize ({self.region_size})")
        count = self.size // self.region_size
        seen: set[int] = set()
        for i, region in enumerate(self.regions):
            if region.index >= count:
                raise ValueError(f"regions[{i}].index: {region.index} is outside the slice ({count} regions)")
            if region.index in seen:
                raise ValueError(f"regions[{i}].index: region {region.index} is assigned twice")
            seen.add(region.index)
        return self

    @property
    def region_count(self) -> int:
        """How many regions fit in the slice."""
        return self.size // self.region_size

    @property
    def end(self) -> int:
        """One past the slice's last byte, in pool coordinates."""
        return self.offset + self.size


class GismoSliceStatus(_Tolerant):
    """Counts for ``kubectl get gismoslices``; the GismoRegion objects are the source of truth."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    regions_total: int | None = Field(default=None, ge=0, description="Regions the slice holds.")
    regions_in_use: int | None = Field(default=None, ge=0, description="Regions held (Reserved or Bound).")
    regions_bound: int | None = Field(default=None, ge=0, description="Regions bound to a pod.")
    regions_reserved: int | None = Field(
        default=None, ge=0, description="Regions reserved, pod not seen yet."
    )
    pods_not_injected: int | None = Field(
        default=None,
        ge=0,
        description="Live Ray pods of the cluster running without the agent (GismoNotInjected).",
    )
    pods_not_injected_names: list[str] = Field(default_factory=list, description="The first 20 of them.")
    pods_not_injected_reported: list[str] = Field(
        default_factory=list,
        description="Uids of those pods whose GismoNotInjected Warning was posted (at most 1000): an "
        "operator that restarts does not post it again.",
    )


class GismoSlice(_Tolerant):
    """``GismoSlice`` (namespaced), named after its RayCluster and owned by it."""

    api_version: Literal["gismo.io/v1alpha1"] = API_VERSION
    kind: Literal["GismoSlice"] = SLICE_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: GismoSliceSpec
    status: GismoSliceStatus | None = None


# --------------------------------------------------------------------------------------------------
# GismoRegion: one region of a slice, held by one pod


class GismoRegionSpec(_Model):
    """Who holds region ``index`` of GismoSlice ``slice``. The object's name is ``<slice>-<index>``, so
    creating it is the atomic claim (AlreadyExists: taken). ``Reserved`` at admission (the pod has no
    uid yet; ``reservedAt`` is also the pod's ``gismo.io/reservation`` annotation); ``Bound`` once the pod
    is seen, and then owned by the pod, so Kubernetes' garbage collector deletes it with the pod."""

    slice: str = Field(min_length=1, description="Name of the GismoSlice (same namespace).")
    slice_uid: str | None = Field(
        default=None, alias="sliceUID", description="uid of that GismoSlice (not of an earlier one)."
    )
    index: int = Field(ge=0, description="Region number inside the slice; offset = index * regionSize.")
    state: Literal["Reserved", "Bound"]
    reserved_at: dt.datetime = Field(description="When the region was reserved; the reservation token.")
    pod_uid: str | None = Field(default=None, alias="podUID")
    pod_name: str | None = None
    node: str | None = None


class GismoRegion(_Tolerant):
    """``GismoRegion`` (namespaced), named ``<slice>-<index>``."""

    api_version: Literal["gismo.io/v1alpha1"] = API_VERSION
    kind: Literal["GismoRegion"] = REGION_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: GismoRegionSpec

    def assignment(self) -> RegionAssignment:
        """The claim as a slice-list entry (the pure rules of :mod:`gismo_operator.core.assignment`)."""
        spec = self.spec
        return RegionAssignment(
            index=spec.index,
            state=spec.state,
            pod_uid=spec.pod_uid,
            pod_name=spec.pod_name,
            node=spec.node,
            reserved_at=spec.reserved_at,
        )


#: Longest object name (a DNS subdomain: a RayCluster's, so its GismoSlice's, may be this long).
MAX_OBJECT_NAME: Final = 253
#: Hex digits of the name's SHA-256 that stand for the cut-off part of a name too long for its place.
NAME_HASH_DIGITS: Final = 10


def _shortened(name: str, limit: int) -> str:
    """``name`` if it has at most ``limit`` characters, else its first characters, ``-`` and
    :data:`NAME_HASH_DIGITS` hex digits of its SHA-256: still unique (up to a hash collision), still
    a valid DNS subdomain and label value (the cut ends on a letter or digit), the same every time."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:NAME_HASH_DIGITS]
    head = name[: limit - NAME_HASH_DIGITS - 1].rstrip("-.")
    return f"{head}-{digest}"


def name_label(name: str) -> str:
    """An object's name as a label value: ``gismo.io/slice`` on a slice's GismoRegions (the LIST
    selector), ``ray.io/cluster`` on a GismoSlice.

    A label value has at most 63 characters; a slice is named after its RayCluster, which may have
    up to 253. A longer name is shortened with a hash (:func:`_shortened`); the full name is in the
    object's spec (``spec.slice``, ``spec.rayCluster``), which the operator checks on every listed
    object, so the label only narrows a list and two names sharing a label never share a region."""
    return _shortened(name, poolrules.MAX_LABEL_NAME)


def region_name(slice_name: str, index: int) -> str:
    """The GismoRegion object of region ``index`` of slice ``slice_name``: ``<slice>-<index>``,
    with the slice part shortened (:func:`_shortened`) when that would pass 253 characters.
    Deterministic: creating this name is the claim of the region."""
    suffix = f"-{index}"
    return _shortened(slice_name, MAX_OBJECT_NAME - len(suffix)) + suffix


# --------------------------------------------------------------------------------------------------
# Errors for people


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the field: ``spec.capacity: '64Gx' is not a byte quantity``.

    Model-level checks raise messages that start with the field they blame (``capacity: ...``); those
    are joined onto the location so the path is complete (``spec.capacity: ...``).
    """
    lines = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"])
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        msg = str(error["msg"]).removeprefix("Value error, ")
        head, sep, rest = msg.partition(": ")
        if sep and _FIELD_RE.match(head):
            loc, msg = (f"{loc}.{head}" if loc else head), rest
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(lines)


_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\[\d+\])?(\.[A-Za-z][A-Za-z0-9]*(\[\d+\])?)*$")
