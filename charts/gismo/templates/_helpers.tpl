{{/*
Names. Every resource name of the chart comes from one of these helpers, so the Deployment, the
Services, the certificate and the webhook configurations always agree.
*/}}

{{/* Chart name, or nameOverride. */}}
{{- define "gismo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-gismo" (or the release name if it already contains the chart name), or fullnameOverride.
Truncated to 48 characters so that every derived name ("-webhook-tls", "-selfsigned-issuer", ...)
stays within 63. */}}
{{- define "gismo.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gismo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "gismo.labels" -}}
helm.sh/chart: {{ include "gismo.chart" . }}
{{ include "gismo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gismo
{{- end }}

{{/* Labels that select the operator pods (Deployment selector, Services, PDB). */}}
{{- define "gismo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gismo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "gismo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gismo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Service the API server calls for admission. */}}
{{- define "gismo.webhookServiceName" -}}
{{- printf "%s-webhook" (include "gismo.fullname" .) }}
{{- end }}

{{/* "<service>.<namespace>.svc": the name the serving certificate is issued for. */}}
{{- define "gismo.webhookHost" -}}
{{- printf "%s.%s.svc" (include "gismo.webhookServiceName" .) .Release.Namespace }}
{{- end }}

{{/* Secret holding tls.crt / tls.key (and ca.crt), mounted at /etc/gismo/tls. */}}
{{- define "gismo.tlsSecretName" -}}
{{- printf "%s-webhook-tls" (include "gismo.fullname" .) }}
{{- end }}

{{/* cert-manager Certificate of the webhook server (mode cert-manager). */}}
{{- define "gismo.certificateName" -}}
{{- printf "%s-webhook" (include "gismo.fullname" .) }}
{{- end }}

{{- define "gismo.metricsServiceName" -}}
{{- printf "%s-metrics" (include "gismo.fullname" .) }}
{{- end }}

{{/* Webhook configuration names are cluster-scoped: prefix them with the release namespace too. */}}
{{- define "gismo.webhookConfigName" -}}
{{- printf "%s-%s" .Release.Namespace (include "gismo.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* ClusterRole / ClusterRoleBinding name (cluster-scoped). */}}
{{- define "gismo.clusterRoleName" -}}
{{- include "gismo.webhookConfigName" . }}
{{- end }}

{{/* "true" when kopf peering is on: always with more than one replica. */}}
{{- define "gismo.peeringEnabled" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicaCount) 1) }}true{{- end }}
{{- end }}

{{/* ClusterKopfPeering object name; empty when peering is off (the operator then runs standalone). */}}
{{- define "gismo.peeringName" -}}
{{- if include "gismo.peeringEnabled" . }}
{{- default (include "gismo.fullname" .) .Values.peering.name }}
{{- end }}
{{- end }}

{{/* "repository:tag" or "repository@digest"; the tag defaults to the chart's appVersion. */}}
{{- define "gismo.imageRef" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "gismo.operatorImage" -}}
{{- include "gismo.imageRef" (list .Values.image .) }}
{{- end }}

{{- define "gismo.agentImage" -}}
{{- include "gismo.imageRef" (list .Values.agent.image .) }}
{{- end }}

{{/*
The webhook configurations' clientConfig for one handler. kopf serves each admission handler at
"/<handler id>" (docs/CONTRACTS.md): the path is the handler id.
Arguments: (list $root "<handler id>").
*/}}
{{- define "gismo.webhookClientConfig" -}}
{{- $root := index . 0 }}
{{- $handlerId := index . 1 -}}
service:
  name: {{ include "gismo.webhookServiceName" $root }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ printf "/%s" $handlerId }}
  port: {{ $root.Values.webhook.servicePort }}
{{- end }}

{{/* Labels that select the node component's pods of one pool. Arguments: (list $root "<pool>"). */}}
{{- define "gismo.nodeSelectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "gismo.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: node
gismo.io/pool: {{ index . 1 | quote }}
{{- end }}

{{/* Labels on the node component's resources of one pool. Arguments: (list $root "<pool>"). */}}
{{- define "gismo.nodeLabels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "gismo.chart" $root }}
{{ include "gismo.nodeSelectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: gismo
{{- end }}

{{/* "<fullname>-node-<pool>", at most 63 characters. Arguments: (list $root "<pool>"). */}}
{{- define "gismo.nodeName" -}}
{{- printf "%s-node-%s" (include "gismo.fullname" (index . 0)) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The node component's image. */}}
{{- define "gismo.nodeImage" -}}
{{- include "gismo.imageRef" (list .Values.node.image .) }}
{{- end }}

{{/* The pools the node component serves, as a JSON list: the chart's pool (pool.create), then node.pools. */}}
{{- define "gismo.nodePools" -}}
{{- $pools := list }}
{{- if .Values.pool.create }}
{{- $spec := .Values.pool.spec }}
{{- $pools = append $pools (dict "name" .Values.pool.name "capacity" $spec.capacity "backend" $spec.backend "nodeSelector" (default (dict) $spec.nodeSelector)) }}
{{- end }}
{{- range .Values.node.pools }}
{{- $pools = append $pools . }}
{{- end }}
{{- toJson $pools }}
{{- end }}
