{{/* NATS cluster helpers (templates/nats). */}}

{{/* "true" when the in-cluster NATS is a cluster of several servers. */}}
{{- define "fincart.nats.clustered" -}}
{{- if and (include "fincart.nats.inCluster" .) (gt (int .Values.nats.replicas) 1) -}}true{{- end -}}
{{- end -}}

{{/* Replicas of every stream: nats.streams.replicas, else min(nats.replicas, 3) in-cluster, else 1. */}}
{{- define "fincart.nats.streamReplicas" -}}
{{- if .Values.nats.streams.replicas -}}
{{- .Values.nats.streams.replicas -}}
{{- else if include "fincart.nats.inCluster" . -}}
{{- min (int .Values.nats.replicas) 3 -}}
{{- else -}}
1
{{- end -}}
{{- end -}}

{{/* FINCART_* of the streams' replicas and retention (every service creates/updates the streams). */}}
{{- define "fincart.streamEnv" -}}
{{- $s := .Values.nats.streams -}}
- name: FINCART_STREAM_REPLICAS
  value: {{ include "fincart.nats.streamReplicas" . | quote }}
- name: FINCART_ORDERS_MAX_AGE_SECONDS
  value: {{ $s.ordersMaxAgeSeconds | int64 | quote }}
- name: FINCART_ORDERS_MAX_BYTES
  value: {{ $s.ordersMaxBytes | int64 | quote }}
- name: FINCART_EVENTS_MAX_AGE_SECONDS
  value: {{ $s.eventsMaxAgeSeconds | int64 | quote }}
- name: FINCART_EVENTS_MAX_BYTES
  value: {{ $s.eventsMaxBytes | int64 | quote }}
- name: FINCART_DLQ_MAX_AGE_SECONDS
  value: {{ $s.dlqMaxAgeSeconds | int64 | quote }}
- name: FINCART_DLQ_MAX_BYTES
  value: {{ $s.dlqMaxBytes | int64 | quote }}
{{- end -}}
