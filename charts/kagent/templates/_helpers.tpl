{{- define "kagent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kagent.labels" -}}
app.kubernetes.io/name: kagent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kagent.selectorLabels" -}}
app.kubernetes.io/name: kagent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "kagent.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "kagent.webhookService" -}}
{{ include "kagent.fullname" . }}-webhook
{{- end -}}

{{- define "kagent.clientConfig" -}}
{{- if .Values.webhook.url }}
url: {{ printf "%s/%s" (trimSuffix "/" .Values.webhook.url) .path }}
{{- else }}
service:
  name: {{ include "kagent.webhookService" .root }}
  namespace: {{ .root.Release.Namespace }}
  port: 443
  path: /{{ .path }}
{{- end }}
{{- end -}}
