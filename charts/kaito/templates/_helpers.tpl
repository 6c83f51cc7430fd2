{{/* Names: <release>-kaito unless the release name already holds "kaito". */}}
{{- define "kaito.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kaito.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kaito.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kaito
{{- end }}

{{- define "kaito.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kaito.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kaito.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kaito.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kaito.image" -}}
{{- $ref := printf "%s/%s" (trimSuffix "/" .Values.image.registry) .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $ref .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $ref (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "kaito.webhookService" -}}
{{- printf "%s-webhook" (include "kaito.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito.webhookSecret" -}}
{{- .Values.webhook.existingSecret | default (printf "%s-webhook-cert" (include "kaito.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{/*
The webhook paths are the operator's kopf handler ids (kopf serves each handler at /<id>):
kaito_core/operator/handlers.py registers "validate" (CREATE, UPDATE) and "defaults" (CREATE)
for kaito.sh/v1beta1 workspaces. With matchPolicy Equivalent the API server converts
v1alpha1 requests to v1beta1 before calling them, so older objects are checked too.
*/}}
{{- define "kaito.validatePath" -}}/validate{{- end }}
{{- define "kaito.mutatePath" -}}/defaults{{- end }}

{{- define "kaito.webhookRules" -}}
- apiGroups: ["kaito.sh"]
  apiVersions: ["v1beta1"]
  operations: {{ toJson . }}
  resources: ["workspaces"]
  scope: Namespaced
{{- end }}
