{{/* Shared names and labels. */}}

{{- define "outbox-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name: the release name alone when it already contains the chart name. */}}
{{- define "outbox-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "outbox-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "outbox-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "outbox-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "outbox-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: outbox-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "outbox-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "outbox-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "outbox-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Fails the render on combinations the schema also rejects, so `--skip-schema-validation`
cannot produce a Deployment where two pods reconcile the same pipelines at once.
*/}}
{{- define "outbox-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "replicaCount > 1 requires leaderElection.enabled=true: without a lease every replica would reconcile the same pipelines" -}}
{{- end -}}
{{- if not .Values.clusterId -}}
{{- fail "clusterId is required: a name unique to this cluster, written into the ownership tags of every AWS resource" -}}
{{- end -}}
{{- if not .Values.aws.region -}}
{{- fail "aws.region is required" -}}
{{- end -}}
{{- end -}}
