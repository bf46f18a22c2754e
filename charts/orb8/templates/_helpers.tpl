{{/* Names, labels and images shared by every template. */}}

{{- define "orb8.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name: the release name alone when it already says orb8. */}}
{{- define "orb8.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "orb8.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "orb8.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "orb8.operator.fullname" -}}
{{- printf "%s-operator" (include "orb8.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orb8.agent.fullname" -}}
{{- printf "%s-agent" (include "orb8.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orb8.operator.serviceAccountName" -}}
{{- default (include "orb8.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "orb8.agent.serviceAccountName" -}}
{{- default (include "orb8.agent.fullname" .) .Values.agent.serviceAccount.name -}}
{{- end -}}

{{- define "orb8.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orb8.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "orb8.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "orb8.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: orb8
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Call with (dict "root" $ "component" "agent"). */}}
{{- define "orb8.componentLabels" -}}
{{ include "orb8.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "orb8.componentSelectorLabels" -}}
{{ include "orb8.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference; call with (dict "root" $ "image" .Values.agent.image).
     The tag defaults to the chart's appVersion, which is the package version the
     images are built and tagged from (pyproject.toml). */}}
{{- define "orb8.image" -}}
{{- $registry := .image.registry | default .root.Values.image.registry -}}
{{- $ref := ternary .image.repository (printf "%s/%s" $registry .image.repository) (empty $registry) -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $ref .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "orb8.imagePullPolicy" -}}
{{- .image.pullPolicy | default .root.Values.image.pullPolicy -}}
{{- end -}}

{{/* The checksum that rolls both workloads when their settings change. */}}
{{- define "orb8.configChecksum" -}}
{{- include (print .Template.BasePath "/configmap.yaml") . | sha256sum -}}
{{- end -}}
