{{/*
Labels of every object. The first three are those of the kustomize install (manifests/), so both
installs select the same pods; the others are Helm's bookkeeping.
Usage: include "monasca-operator.labels" (dict "ctx" $ "component" "operator")
("unnamed" true leaves out app.kubernetes.io/name, as the kustomize install's cert-manager objects do.)
*/}}
{{- define "monasca-operator.labels" -}}
{{- if not .unnamed }}
app.kubernetes.io/name: monasca-operator
{{- end }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/part-of: monasca-sidecar
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The operator pods' selector: fixed, identical to the kustomize install's (immutable once created). */}}
{{- define "monasca-operator.selector" -}}
app.kubernetes.io/name: monasca-operator
app.kubernetes.io/component: operator
{{- end }}

{{- define "monasca-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "monasca-operator.sidecarImage" -}}
{{ .Values.sidecarImage.repository }}:{{ .Values.sidecarImage.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Checks on values that Helm's schema cannot express. */}}
{{- define "monasca-operator.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "leaderElection.enabled=false needs replicas=1: several replicas without a Lease would all write" }}
{{- end }}
{{- if or (lt (int .Values.webhook.timeoutSeconds) 1) (gt (int .Values.webhook.timeoutSeconds) 30) }}
{{- fail "webhook.timeoutSeconds must be between 1 and 30 (the apiserver's limits)" }}
{{- end }}
{{- end }}
