{{/*
Names, labels and the pieces every quotaflow pod shares.
*/}}

{{- define "quotaflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "quotaflow.fullname" -}}
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

{{/* "<fullname>-<component>", at most 63 characters */}}
{{- define "quotaflow.componentName" -}}
{{- printf "%s-%s" (include "quotaflow.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "quotaflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "quotaflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quotaflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "quotaflow.labels" -}}
helm.sh/chart: {{ include "quotaflow.chart" .root }}
{{ include "quotaflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: quotaflow
{{- end }}

{{- define "quotaflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "quotaflow.tritonImage" -}}
{{- printf "%s:%s" .Values.triton.image.repository (default .Chart.AppVersion .Values.triton.image.tag) }}
{{- end }}

{{- define "quotaflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "quotaflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "quotaflow.secretName" -}}
{{- default (include "quotaflow.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Triton's gRPC address as the inference agent sees it */}}
{{- define "quotaflow.tritonUrl" -}}
{{- if .Values.triton.enabled }}
{{- printf "%s:%d" (include "quotaflow.componentName" (dict "root" . "component" "triton")) (int .Values.triton.ports.grpc) }}
{{- else }}
{{- required "external.tritonUrl is required when triton.enabled is false" .Values.external.tritonUrl }}
{{- end }}
{{- end }}

{{/* The non-secret settings every quotaflow process reads (the ConfigMap's data, and the
     setup Job's env, which runs before the ConfigMap exists) */}}
{{- define "quotaflow.settings" -}}
QUOTAFLOW_PARTITIONS: {{ .Values.partitions | int | quote }}
QUOTAFLOW_STREAM_PREFIX: {{ .Values.streamPrefix | quote }}
QUOTAFLOW_BILLING_SCHEMA: {{ .Values.billingSchema | quote }}
QUOTAFLOW_REDIS_PREFIX: {{ .Values.redisPrefix | quote }}
QUOTAFLOW_TRITON_URL: {{ include "quotaflow.tritonUrl" . | quote }}
QUOTAFLOW_HTTP_HOST: "0.0.0.0"
QUOTAFLOW_HTTP_PORT: {{ .Values.ingress.port | int | quote }}
QUOTAFLOW_METRICS_PORT: {{ .Values.observability.metricsPort | int | quote }}
QUOTAFLOW_METRICS_MAX_TENANTS: {{ .Values.observability.maxTenantLabels | int | quote }}
QUOTAFLOW_LOG_LEVEL: {{ .Values.observability.logLevel | quote }}
QUOTAFLOW_LOG_FORMAT: {{ .Values.observability.logFormat | quote }}
QUOTAFLOW_OTEL_EXPORTER: {{ .Values.observability.otel.exporter | quote }}
{{- with .Values.observability.otel.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- end }}

{{/* The secret settings: keys of the Secret */}}
{{- define "quotaflow.secretKeys" -}}
- QUOTAFLOW_RABBITMQ_URL
- QUOTAFLOW_REDIS_URL
- QUOTAFLOW_POSTGRES_DSN
- QUOTAFLOW_ADMIN_KEY
{{- end }}

{{- define "quotaflow.envFrom" -}}
- configMapRef:
    name: {{ include "quotaflow.fullname" . }}
- secretRef:
    name: {{ include "quotaflow.secretName" . }}
{{- end }}

{{/* Pod annotations: config checksum (a changed setting rolls the pods) and scraping */}}
{{- define "quotaflow.podAnnotations" -}}
checksum/config: {{ include "quotaflow.settings" .root | sha256sum }}
{{- if and .root.Values.observability.prometheusAnnotations .metricsPort }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .metricsPort | int | quote }}
prometheus.io/path: "/metrics"
{{- end }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The Prometheus label selector that scopes KEDA's queries to this release's namespace */}}
{{- define "quotaflow.promScope" -}}
{{- $p := .Values.keda.prometheus -}}
{{- printf "%s=%q" $p.namespaceLabel .Release.Namespace -}}
{{- with $p.extraSelector }}{{ printf ",%s" . }}{{ end -}}
{{- end }}

{{/* A replica count never above the partitions (replicas beyond N idle) */}}
{{- define "quotaflow.capReplicas" -}}
{{- min (int .replicas) (int .root.Values.partitions) -}}
{{- end }}

{{/* The setup Job's env: the settings inline, the secret ones from .secret */}}

{{- define "quotaflow.setupEnv" -}}
{{- range $key, $value := (include "quotaflow.settings" .root | fromYaml) }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- range (list "QUOTAFLOW_RABBITMQ_URL" "QUOTAFLOW_REDIS_URL" "QUOTAFLOW_POSTGRES_DSN") }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $.secret }}
      key: {{ . }}
{{- end }}
- name: HOME
  value: /tmp
{{- end }}
