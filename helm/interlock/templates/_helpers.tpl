{{/* Names and labels. */}}
{{- define "interlock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "interlock.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "interlock.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "interlock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The component label keeps the gateway's selectors off the bundled Redis pod and back. */}}
{{- define "interlock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "interlock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "interlock.redis.fullname" -}}
{{- printf "%s-redis" (include "interlock.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "interlock.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "interlock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "interlock.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "interlock.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "interlock.sealSecretName" -}}
{{- default (printf "%s-seal" (include "interlock.fullname" .)) .Values.sealKey.existingSecret }}
{{- end }}

{{/* The port the gateway listens on inside the pod (listen.port). */}}
{{- define "interlock.containerPort" -}}8080{{- end }}

{{/* Where the gateway file and the policy directory are mounted; policies_dir is relative to
the gateway file, as the gateway resolves it. */}}
{{- define "interlock.configDir" -}}/etc/interlock{{- end }}

{{/* uvicorn's timeout_graceful_shutdown in proxy/cli.py: how long open streams may run on after
SIGTERM (tests/helm checks the two agree). */}}
{{- define "interlock.streamDrainSeconds" -}}30{{- end }}

{{/* preStop sleep + the gateway's stream drain + time to close its store and sessions. */}}
{{- define "interlock.terminationGracePeriodSeconds" -}}
{{- add .Values.shutdown.drainSeconds (include "interlock.streamDrainSeconds" .) 10 }}
{{- end }}

{{/* The response store URL. */}}
{{- define "interlock.storeUrl" -}}
{{- if eq .Values.redis.mode "bundled" }}
{{- printf "redis://%s:6379/0" (include "interlock.redis.fullname" .) }}
{{- else }}
{{- .Values.redis.external.storeUrl }}
{{- end }}
{{- end }}

{{/* The gateway file: the user's config plus the keys the chart owns. */}}
{{- define "interlock.gatewayConfig" -}}
{{- $owned := dict
  "listen" (dict "host" "0.0.0.0" "port" (int (include "interlock.containerPort" .)) "workers" (int .Values.workers))
  "store" (include "interlock.storeUrl" .)
  "policies_dir" "policies" }}
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.limitsUrl }}
{{- $_ := set $owned "limits_store" .Values.redis.external.limitsUrl }}
{{- end }}
{{- toYaml (merge $owned (deepCopy .Values.config)) }}
{{- end }}
