{{/* Chart name, truncated to a DNS label. */}}
{{- define "moe-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name for the manager's objects. */}}
{{- define "moe-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "moe-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "moe-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "moe-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "moe-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end -}}

{{- define "moe-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "moe-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The engine image: engineImage, or the project's engine image at the chart's appVersion. */}}
{{- define "moe-operator.engineImage" -}}
{{- .Values.engineImage | default (printf "ghcr.io/moe-operator/moe-engine:%s" .Chart.AppVersion) -}}
{{- end -}}

{{/* The GPU engine image: engineGPUImage, or the project's Vulkan engine image at the chart's appVersion. */}}
{{- define "moe-operator.engineGPUImage" -}}
{{- .Values.engineGPUImage | default (printf "ghcr.io/moe-operator/moe-engine:%s-vulkan" .Chart.AppVersion) -}}
{{- end -}}

{{/* Name of the metrics port: https behind the authentication filter, else http. */}}
{{- define "moe-operator.metricsPortName" -}}
{{- if .Values.metrics.secure -}}https{{- else -}}http{{- end -}}
{{- end -}}
