{{/* Shared names and labels. */}}

{{/* The app name (the app.kubernetes.io/name label): nameOverride, else the chart name. */}}
{{- define "outbox-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Release-scoped name of every object: fullnameOverride when set; else the release name alone when
it already contains the app name; else "<release>-<name>".
*/}}
{{- define "outbox-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
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

{{/* repository@digest when image.digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "outbox-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The image check: no outbox-operator image is published, so an image reference naming no
registry cannot be pulled. An empty repository is refused, and so is one in Docker Hub's
official-image namespace: a single path component such as "outbox-operator" (which the container
runtime expands to docker.io/library/outbox-operator), or that name spelled out with docker.io/
or library/. No outbox-operator exists there. Allowed anyway with image.pullPolicy Never: then
the image is only looked up on the node (loaded there with `kind load docker-image`).
*/}}
{{- define "outbox-operator.validateImage" -}}
{{- $repo := .Values.image.repository -}}
{{- if not $repo -}}
{{- fail "image.repository is required: no outbox-operator image is published. Build the repository's Dockerfile, push the image to a registry your nodes pull from and set image.repository to it (e.g. registry.example.com/platform/outbox-operator). On kind: `kind load docker-image outbox-operator:<tag>` and set image.repository=outbox-operator, image.tag=<tag>, image.pullPolicy=Never. See docs/install.md" -}}
{{- end -}}
{{- if and (regexMatch "^((docker\\.io|index\\.docker\\.io)/)?(library/)?[^/]+$" $repo) (ne .Values.image.pullPolicy "Never") -}}
{{- $name := regexReplaceAll "^.*/" $repo "" -}}
{{- fail (printf "image.repository %q names no registry: the nodes would pull docker.io/library/%s, which does not exist (no outbox-operator image is published). Set image.repository to the registry path you pushed the image to (e.g. registry.example.com/platform/%s), or set image.pullPolicy=Never for an image loaded onto the nodes (kind load docker-image). See docs/install.md" $repo $name $name) -}}
{{- end -}}
{{- end -}}

{{/*
The environment the operator reads, as a YAML list. extraEnv may not set any of these names:
a second entry would silently override (or be overridden by) the chart's value.
*/}}
{{- define "outbox-operator.env" -}}
- name: AWS_REGION
  value: {{ .Values.aws.region | quote }}
{{- with .Values.aws.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.aws.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
- name: AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SESSION_TOKEN
      optional: true
{{- end }}
- name: OUTBOX_CLUSTER_ID
  value: {{ .Values.clusterId | quote }}
- name: OUTBOX_ALLOW_ADOPTION
  value: {{ .Values.allowAdoption | quote }}
- name: OUTBOX_ALLOW_DELETE_ADOPTED_TABLES
  value: {{ .Values.allowDeleteAdoptedTables | quote }}
{{- with .Values.permissionsBoundaryArn }}
- name: OUTBOX_PERMISSIONS_BOUNDARY_ARN
  value: {{ . | quote }}
{{- end }}
- name: OUTBOX_RESYNC_PERIOD
  value: {{ .Values.resyncPeriod | quote }}
- name: OUTBOX_CONCURRENCY
  value: {{ .Values.concurrency | quote }}
- name: OUTBOX_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
- name: OUTBOX_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- with .Values.watchNamespace }}
- name: OUTBOX_NAMESPACE
  value: {{ . | quote }}
{{- end }}
- name: OUTBOX_LEADER_ELECTION
  value: {{ .Values.leaderElection.enabled | quote }}
{{- if .Values.leaderElection.enabled }}
- name: OUTBOX_LEASE_NAME
  value: {{ .Values.leaderElection.leaseName | quote }}
- name: OUTBOX_LEASE_DURATION
  value: {{ .Values.leaderElection.leaseDuration | quote }}
- name: OUTBOX_RENEW_DEADLINE
  value: {{ .Values.leaderElection.renewDeadline | quote }}
- name: OUTBOX_RETRY_PERIOD
  value: {{ .Values.leaderElection.retryPeriod | quote }}
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/*
Fails the render on combinations the schema also rejects, so `--skip-schema-validation`
cannot produce a Deployment where two pods reconcile the same pipelines at once; and on what
no schema can see: an image that cannot be pulled, podLabels that collide with the chart's
labels, extraEnv entries that shadow the chart's environment.
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
{{- include "outbox-operator.validateImage" . -}}
{{- $chartLabels := include "outbox-operator.labels" . | fromYaml -}}
{{- $selector := include "outbox-operator.selectorLabels" . | fromYaml -}}
{{- range $key, $_ := .Values.podLabels -}}
{{- if hasKey $selector $key -}}
{{- fail (printf "podLabels.%s: the chart sets this selector label itself; overriding it would detach the pods from the Deployment's selector and the metrics Service (use nameOverride to change app.kubernetes.io/name)" $key) -}}
{{- else if hasKey $chartLabels $key -}}
{{- fail (printf "podLabels.%s: the chart sets this label itself; remove it from podLabels" $key) -}}
{{- end -}}
{{- end -}}
{{- $chartEnv := dict -}}
{{- range (include "outbox-operator.env" . | fromYamlArray) -}}
{{- $_ := set $chartEnv .name true -}}
{{- end -}}
{{- range $i, $e := .Values.extraEnv -}}
{{- if hasKey $chartEnv $e.name -}}
{{- fail (printf "extraEnv[%d].name: %s is set by the chart from its values (see values.yaml); set that value instead" $i $e.name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
