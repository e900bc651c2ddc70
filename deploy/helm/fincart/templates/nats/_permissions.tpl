{{/* NATS users of the FinCart components (chaos: the operator's load and verify runners) and what each may publish; the same table as
     fincart_devstack.credentials.PERMISSIONS (tests/integration/test_deploy_chart.py compares them). Every user
     subscribes to _INBOX.> only (JetStream replies and deliveries). Nobody may purge or delete a stream. */}}
{{- define "fincart.nats.permissions" -}}
{{- $streams := list "$JS.API.INFO" "$JS.API.STREAM.INFO.*" "$JS.API.STREAM.CREATE.*" "$JS.API.STREAM.UPDATE.*" "$JS.API.STREAM.NAMES" "$JS.API.STREAM.LIST" -}}
ingest: {{ concat (list "orders.webhooks.*" "*.orders.webhooks.*") $streams | toJson }}
processor: {{ concat (list "orders.events.*" "*.orders.events.*" "orders.dlq" "*.orders.dlq") $streams (list "$JS.API.CONSUMER.>" "$JS.ACK.>" "$JS.API.STREAM.MSG.GET.*" "$JS.API.DIRECT.GET.>") | toJson }}
sync: {{ concat $streams (list "$JS.API.CONSUMER.CREATE.>" "$JS.API.CONSUMER.INFO.>" "$JS.API.CONSUMER.DELETE.>" "$JS.FC.>") | toJson }}
chaos: {{ list "chaos.ledger.>" "*.chaos.ledger.>" "$O.>" "$JS.API.STREAM.CREATE.*" "$JS.API.STREAM.INFO.*" "$JS.API.STREAM.NAMES" "$JS.API.STREAM.MSG.GET.*" "$JS.API.CONSUMER.CREATE.>" "$JS.FC.>" | toJson }}
{{- end -}}
