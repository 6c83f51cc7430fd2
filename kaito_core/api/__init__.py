"""The Workspace API: models, parsing with field-named errors, validation rules, CRD."""

from kaito_core.api.models import (  # noqa: F401
    API_VERSIONS, GROUP, KIND, STORAGE_VERSION, VERSIONS, ConfigMap, Workspace)
from kaito_core.api.parse import (  # noqa: F401
    Document, DocumentError, configmaps_by_name, load_documents, load_text, load_workspaces,
    parse_configmap, parse_workspace)
from kaito_core.api.validation import ValidationResult, validate_workspace  # noqa: F401
