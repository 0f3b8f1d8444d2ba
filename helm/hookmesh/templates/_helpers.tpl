{{/* Chart name, truncated to a DNS label. */}}
{{- define "hookmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name for every object. */}}
{{- define "hookmesh.fullname" -}}
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

{{- define "hookmesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "hookmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hookmesh
{{- end }}

{{/* Selector labels of one service; the context is (dict "root" $ "service" $svc). */}}
{{- define "hookmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hookmesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service.name }}
{{- end }}

{{/*
The services, one Deployment each: the name, the values key, the `hookmesh`
subcommand, and the port serving /health, /readyz and /metrics.
*/}}
{{- define "hookmesh.services" -}}
- name: gateway
  key: gateway
  command: gateway
  port: 8080
  portName: http
- name: sweep-worker
  key: sweepWorker
  command: sweep-worker
  port: 9090
  portName: ops
- name: csr-consumer
  key: csrConsumer
  command: csr-consumer
  port: 9090
  portName: ops
- name: batch-processor
  key: batchProcessor
  command: batch-processor
  port: 9090
  portName: ops
{{- end }}

{{- define "hookmesh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* NATS_URL: the nats subchart's client Service, or the external cluster. */}}
{{- define "hookmesh.natsUrl" -}}
{{- if .Values.nats.enabled -}}
nats://{{ .Release.Name }}-nats:4222
{{- else -}}
{{ required "nats.url is required when nats.enabled is false" .Values.nats.url }}
{{- end }}
{{- end }}

{{- define "hookmesh.secretName" -}}
{{- default (printf "%s-secrets" (include "hookmesh.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "hookmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hookmesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}
