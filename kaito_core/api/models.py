"""The Workspace custom resource, ``kaito.sh/v1alpha1`` and ``kaito.sh/v1beta1``.

Upstream's YAML is accepted unchanged: ``resource``, ``inference`` and ``tuning`` sit at the top
level of the object (there is no ``spec``), field names are camelCase. Python attributes are
snake_case (``ws.resource.instance_type``); :meth:`Workspace.to_k8s` gives the camelCase dict.

These models check types and shapes (one error per bad field, all collected); rules that
span fields or need the installed plugins live in :mod:`kaito_core.api.validation`.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator
from pydantic.alias_generators import to_camel

GROUP = "kaito.sh"
KIND = "Workspace"
VERSIONS = ("v1alpha1", "v1beta1")
STORAGE_VERSION = "v1beta1"
API_VERSIONS = tuple(f"{GROUP}/{v}" for v in VERSIONS)

# Annotations upstream understands (KAITO-REFERENCE.md).
ANNOTATION_RUNTIME = "kaito.sh/runtime"
ANNOTATION_ENABLE_LB = "kaito.sh/enablelb"
ANNOTATION_BYPASS_CHECKS = "kaito.sh/bypass-resource-checks"
ANNOTATION_LOCAL_WEIGHTS = "kaito.sh/use-local-weights"
ANNOTATION_PERFORMANCE_MODE = "kaito.sh/performance-mode"
ANNOTATION_DISABLE_BENCHMARK = "kaito.sh/disable-benchmark"
# Upstream's node-local model cache for kaito.sh/use-local-weights: "true".
LOCAL_MODELS_DIR = "/opt/kaito/models"


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields refused (with a suggestion)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=False, validate_default=False)

    def to_k8s(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class _Open(_Model):
    """Kubernetes objects we pass through (PodTemplateSpec, VolumeSource): any fields allowed."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class ObjectMeta(_Model):
    """meta/v1 ObjectMeta: every field it has (so a misspelt one is refused, as ``kubectl apply``'s
    strict field validation refuses it, instead of silently dropped)."""

    name: Optional[StrictStr] = None
    generate_name: Optional[StrictStr] = None
    self_link: Optional[StrictStr] = None
    deletion_grace_period_seconds: Optional[StrictInt] = None
    owner_references: Optional[list[dict[str, Any]]] = None
    managed_fields: Optional[list[dict[str, Any]]] = None
    namespace: Optional[StrictStr] = None
    uid: Optional[StrictStr] = None
    resource_version: Optional[StrictStr] = None
    generation: Optional[StrictInt] = None
    labels: Optional[dict[StrictStr, StrictStr]] = None
    annotations: Optional[dict[StrictStr, StrictStr]] = None
    finalizers: Optional[list[StrictStr]] = None
    creation_timestamp: Optional[StrictStr] = None
    deletion_timestamp: Optional[StrictStr] = None


class LabelSelectorRequirement(_Model):
    key: StrictStr
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Optional[list[StrictStr]] = None


class LabelSelector(_Model):
    match_labels: Optional[dict[StrictStr, StrictStr]] = None
    match_expressions: Optional[list[LabelSelectorRequirement]] = None


class Partition(_Model):
    mode: StrictStr
    profile: Optional[StrictStr] = None
    count: Optional[StrictInt] = Field(default=None, ge=1)


class ResourceSpec(_Model):
    count: Optional[StrictInt] = None
    instance_type: Optional[StrictStr] = None
    label_selector: Optional[LabelSelector] = None
    preferred_nodes: Optional[list[StrictStr]] = None
    partition: Optional[Partition] = None


class PresetOptions(_Model):
    image: Optional[StrictStr] = None
    image_pull_secrets: Optional[list[StrictStr]] = None
    model_access_secret: Optional[StrictStr] = None


class PresetSpec(_Model):
    name: StrictStr
    access_mode: Optional[Literal["public", "private"]] = None
    preset_options: Optional[PresetOptions] = None


class DataSource(_Model):
    name: Optional[StrictStr] = None
    urls: Optional[list[StrictStr]] = None
    image: Optional[StrictStr] = None
    image_pull_secrets: Optional[list[StrictStr]] = None
    volume_source: Optional[dict[str, Any]] = None


class DataDestination(_Model):
    image: Optional[StrictStr] = None
    image_push_secret: Optional[StrictStr] = None
    volume_source: Optional[dict[str, Any]] = None


class AdapterSpec(_Model):
    source: DataSource
    strength: Optional[StrictStr] = None


class InferenceSpec(_Model):
    preset: Optional[PresetSpec] = None
    template: Optional[dict[str, Any]] = None
    config: Optional[StrictStr] = None
    adapters: Optional[list[AdapterSpec]] = None


class TuningSpec(_Model):
    preset: Optional[PresetSpec] = None
    method: Optional[StrictStr] = None

    @field_validator("method")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        # upstream lower-cases the method ("QLoRA" in its docs and examples means qlora)
        return value.lower() if isinstance(value, str) else value
    config: Optional[StrictStr] = None
    input: Optional[DataSource] = None
    output: Optional[DataDestination] = None


class Condition(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    type: StrictStr
    status: Literal["True", "False", "Unknown"]
    reason: Optional[StrictStr] = None
    message: Optional[StrictStr] = None
    last_transition_time: Optional[StrictStr] = None
    observed_generation: Optional[StrictInt] = None


class Metric(_Model):
    """One post-load benchmark measurement (upstream's status.performance.metrics values)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    description: StrictStr
    value: StrictStr
    unit: Optional[StrictStr] = None
    config: Optional[dict[StrictStr, StrictStr]] = None


class Performance(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    metrics: Optional[dict[StrictStr, Metric]] = None


class WorkspaceStatus(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    worker_nodes: Optional[list[StrictStr]] = None
    conditions: Optional[list[Condition]] = None
    state: Optional[StrictStr] = None
    target_node_count: Optional[StrictInt] = None
    performance: Optional[Performance] = None


class Workspace(_Model):
    api_version: Literal["kaito.sh/v1alpha1", "kaito.sh/v1beta1"] = "kaito.sh/v1beta1"
    kind: Literal["Workspace"] = "Workspace"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    resource: Optional[ResourceSpec] = None
    inference: Optional[InferenceSpec] = None
    tuning: Optional[TuningSpec] = None
    status: Optional[WorkspaceStatus] = None

    # -- conveniences used by the reconciler, the CLI and local mode ------------------------

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.metadata.annotations or {})

    @property
    def mode(self) -> str:
        """``"inference"`` or ``"tuning"`` (validation guarantees exactly one)."""
        return "tuning" if self.tuning is not None else "inference"

    @property
    def preset_name(self) -> str | None:
        spec = self.tuning if self.tuning is not None else self.inference
        return spec.preset.name if spec is not None and spec.preset is not None else None

    @property
    def runtime_annotation(self) -> str | None:
        return self.annotations.get(ANNOTATION_RUNTIME)

    @property
    def load_balancer(self) -> bool:
        return self.annotations.get(ANNOTATION_ENABLE_LB, "").lower() == "true"

    @property
    def bypass_resource_checks(self) -> bool:
        return self.annotations.get(ANNOTATION_BYPASS_CHECKS, "").lower() in ("true", "1", "yes")

    @property
    def use_local_weights(self) -> bool:
        """``kaito.sh/use-local-weights: "true"`` (validation refuses anything but true/false)."""
        return self.annotations.get(ANNOTATION_LOCAL_WEIGHTS, "").strip().lower() == "true"

    @property
    def local_weights_path(self) -> str | None:
        """Upstream's meaning: "true" mounts the node's /opt/kaito/models/<preset>; anything
        else (including "false") is off. Never the annotation's value as a path."""
        if not self.use_local_weights or not self.preset_name:
            return None
        return f"{LOCAL_MODELS_DIR}/{self.preset_name}"

    def spec_dict(self) -> dict[str, Any]:
        """resource/inference/tuning as camelCase (what the revision hash covers)."""
        out = self.to_k8s()
        return {k: out[k] for k in ("resource", "inference", "tuning") if k in out}


class ConfigMap(_Model):
    """A ``v1/ConfigMap`` holding ``inference_config.yaml`` or ``training_config.yaml``."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    api_version: Literal["v1"] = "v1"
    kind: Literal["ConfigMap"] = "ConfigMap"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    data: Optional[dict[StrictStr, StrictStr]] = None
    immutable: Optional[StrictBool] = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""
