{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "fincart.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-<chart>" (or the release alone when it already holds the chart name). */}}
{{- define "fincart.fullname" -}}
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

{{/* Name of one component's objects: dict "root" $ "component" "ingest". */}}
{{- define "fincart.componentName" -}}
{{- printf "%s-%s" (include "fincart.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "fincart.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "fincart.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fincart
{{- end -}}

{{/* Selector labels of the whole release. */}}
{{- define "fincart.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fincart.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: dict "root" $ "component" "ingest". */}}
{{- define "fincart.componentLabels" -}}
{{ include "fincart.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector labels of one component: dict "root" $ "component" "ingest". */}}
{{- define "fincart.componentSelectorLabels" -}}
{{ include "fincart.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image reference: dict "root" $ "image" .Values.ingest.image (repository, tag). */}}
{{- define "fincart.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $registry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret with webhook-secret and database-url. */}}
{{- define "fincart.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "fincart.fullname" .) -}}
{{- end -}}

{{/* "true" when the in-cluster dependency runs. */}}
{{- define "fincart.nats.inCluster" -}}
{{- if not .Values.nats.externalUrl -}}true{{- end -}}
{{- end -}}
{{- define "fincart.postgres.inCluster" -}}
{{- if and .Values.postgres.enabled (not .Values.postgres.externalUrl) -}}true{{- end -}}
{{- end -}}
{{- define "fincart.redis.inCluster" -}}
{{- if not .Values.redis.externalUrl -}}true{{- end -}}
{{- end -}}

{{/* Name of the Secret with the credentials between components (NATS users, Redis password). */}}
{{- define "fincart.internalSecretName" -}}
{{- printf "%s-internal" (include "fincart.fullname" .) -}}
{{- end -}}

{{/* Connection URLs. */}}
{{- define "fincart.natsUrl" -}}
{{- .Values.nats.externalUrl | default (printf "nats://%s-nats:%d" (include "fincart.fullname" .) (int .Values.nats.port)) -}}
{{- end -}}
{{/* The NATS URL of one component: through the fault proxy when it routes that component (faultProxy). */}}
{{- define "fincart.componentNatsUrl" -}}
{{- $proxy := .root.Values.faultProxy -}}
{{- if and $proxy.enabled $proxy.routes.processorNats (eq .component "processor") -}}
{{- printf "nats://%s-fault-proxy:%d" (include "fincart.fullname" .root) (int .root.Values.nats.port) -}}
{{- else -}}
{{- include "fincart.natsUrl" .root -}}
{{- end -}}
{{- end -}}
{{- define "fincart.redisUrl" -}}
{{- .Values.redis.externalUrl | default (printf "redis://%s-redis:6379/0" (include "fincart.fullname" .)) -}}
{{- end -}}

{{/* Password of the in-cluster PostgreSQL: the value, else the one already stored, else a random one.
     The choice is written back into .Values so that every template of this render sees the same one. */}}
{{- define "fincart.postgres.password" -}}
{{- if not .Values.postgres.password -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-postgres" (include "fincart.fullname" .)) -}}
{{- if and $existing $existing.data (hasKey $existing.data "password") -}}
{{- $_ := set .Values.postgres "password" (index $existing.data "password" | b64dec) -}}
{{- else -}}
{{- $_ := set .Values.postgres "password" (randAlphaNum 32) -}}
{{- end -}}
{{- end -}}
{{- .Values.postgres.password -}}
{{- end -}}

{{/* Webhook HMAC secret: the value, else the one already stored, else a random one (same trick). */}}
{{- define "fincart.webhookSecret" -}}
{{- if not .Values.secrets.webhookSecret -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "fincart.fullname" .) -}}
{{- if and $existing $existing.data (hasKey $existing.data "webhook-secret") -}}
{{- $_ := set .Values.secrets "webhookSecret" (index $existing.data "webhook-secret" | b64dec) -}}
{{- else -}}
{{- $_ := set .Values.secrets "webhookSecret" (randAlphaNum 40) -}}
{{- end -}}
{{- end -}}
{{- .Values.secrets.webhookSecret -}}
{{- end -}}

{{/* Sync's read token (what clients send as a bearer token): the value, else the one already stored, else a
     random one (same trick). Only its sha256 reaches sync, through sync-read-token-hashes. */}}
{{- define "fincart.syncReadToken" -}}
{{- if not .Values.secrets.syncReadToken -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "fincart.fullname" .) -}}
{{- if and $existing $existing.data (hasKey $existing.data "sync-read-token") -}}
{{- $_ := set .Values.secrets "syncReadToken" (index $existing.data "sync-read-token" | b64dec) -}}
{{- else -}}
{{- $_ := set .Values.secrets "syncReadToken" (printf "fct_%s" (randAlphaNum 43)) -}}
{{- end -}}
{{- end -}}
{{- .Values.secrets.syncReadToken -}}
{{- end -}}

{{/* FINCART_READ_TOKEN_HASHES: the read token's sha256 plus the extra hashes (other clients, rotation). */}}
{{- define "fincart.readTokenHashes" -}}
{{- prepend .Values.secrets.extraReadTokenHashes (include "fincart.syncReadToken" . | sha256sum) | join "," -}}
{{- end -}}

{{/* PostgreSQL URL stored in the chart's Secret. */}}
{{- define "fincart.databaseUrl" -}}
{{- if .Values.postgres.externalUrl -}}
{{- .Values.postgres.externalUrl -}}
{{- else -}}
{{- printf "postgresql://%s:%s@%s-postgres:5432/%s" .Values.postgres.user (include "fincart.postgres.password" .) (include "fincart.fullname" .) .Values.postgres.database -}}
{{- end -}}
{{- end -}}

{{/* Pod-level pieces shared by every workload. */}}
{{- define "fincart.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podDefaults.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podDefaults.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod metadata labels/annotations: dict "root" $ "component" "ingest". */}}
{{- define "fincart.podMetadata" -}}
labels:
  {{- include "fincart.componentLabels" . | nindent 2 }}
  {{- with .root.Values.podDefaults.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .root.Values.podDefaults.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Environment every FinCart container gets: dict "root" $ "component" "ingest" "port" 8080. */}}
{{- define "fincart.commonEnv" -}}
- name: FINCART_HTTP_HOST
  value: "0.0.0.0"
- name: FINCART_HTTP_PORT
  value: {{ .port | quote }}
- name: FINCART_SERVICE_NAME
  value: {{ printf "fincart-%s" .component | quote }}
- name: FINCART_LOG_LEVEL
  value: {{ .root.Values.config.logLevel | quote }}
- name: FINCART_OTEL_EXPORTER
  value: {{ .root.Values.config.otelExporter | quote }}
- name: FINCART_PARTITIONS
  value: {{ .root.Values.config.partitions | quote }}
- name: FINCART_NATS_PREFIX
  value: {{ .root.Values.config.natsPrefix | quote }}
{{- if and (include "fincart.nats.inCluster" .root) (has .component (list "ingest" "processor" "sync")) }}
- name: FINCART_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "fincart.internalSecretName" .root }}
      key: {{ printf "nats-%s-password" .component }}
- name: FINCART_NATS_URL
  value: {{ include "fincart.componentNatsUrl" . | replace "nats://" (printf "nats://%s:$(FINCART_NATS_PASSWORD)@" .component) | quote }}
{{- else }}
- name: FINCART_NATS_URL
  value: {{ include "fincart.componentNatsUrl" . | quote }}
{{- end }}
{{ include "fincart.streamEnv" .root }}
{{- with .root.Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* FINCART_DATABASE_URL from the Secret. */}}
{{- define "fincart.databaseEnv" -}}
- name: FINCART_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "fincart.secretName" . }}
      key: database-url
{{- end -}}

{{/* The /tmp emptyDir (the root filesystem is read-only). */}}
{{- define "fincart.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.podDefaults.tmpSizeLimit }}
{{- end -}}
{{- define "fincart.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Liveness on /healthz, readiness on /readyz of the "http" port. */}}
{{- define "fincart.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{/* Hook events of the migration Job: before install when the database already exists elsewhere,
     after install when the in-cluster PostgreSQL is created by this very release. */}}
{{- define "fincart.migrations.hook" -}}
{{- if include "fincart.postgres.inCluster" . -}}post-install,pre-upgrade{{- else -}}pre-install,pre-upgrade{{- end -}}
{{- end -}}

{{/* The Ingress's proxy settings, derived from the values the services run with. The body limit leaves a
     1 MiB margin above FINCART_MAX_BODY_BYTES so that ingest answers 413 itself (logged and counted) up
     to there; the read/send timeouts are three heartbeat intervals, so an idle /sync WebSocket is cut
     only after two missed heartbeats. fincart_devstack.ingress_proxy computes the same numbers for the local
     nginx; tests/integration/test_deploy_chart.py keeps the two equal. */}}
{{- define "fincart.ingress.annotations" -}}
{{- $timeout := mulf .Values.sync.heartbeatIntervalSeconds 3 | ceil | int64 | toString -}}
{{- $derived := dict
      "nginx.ingress.kubernetes.io/proxy-body-size" (add (int64 .Values.ingest.maxBodyBytes) 1048576 | toString)
      "nginx.ingress.kubernetes.io/proxy-read-timeout" $timeout
      "nginx.ingress.kubernetes.io/proxy-send-timeout" $timeout
      "nginx.ingress.kubernetes.io/proxy-buffering" "off" -}}
{{- toYaml (merge $derived .Values.ingress.annotations) -}}
{{- end -}}
