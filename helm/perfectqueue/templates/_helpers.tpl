{{/* Names and labels shared by every template. */}}

{{- define "perfectqueue.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "perfectqueue.fullname" -}}
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

{{- define "perfectqueue.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "perfectqueue.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "perfectqueue.selectorLabels" -}}
app.kubernetes.io/name: {{ include "perfectqueue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: service, worker, db-init, test. */}}
{{- define "perfectqueue.componentLabels" -}}
{{ include "perfectqueue.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "perfectqueue.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "perfectqueue.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "perfectqueue.secretName" -}}
{{- default (include "perfectqueue.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "perfectqueue.image" -}}
{{- $image := merge (dict) (.image | default dict) .root.Values.image }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag | toString) }}
{{- end }}

{{- define "perfectqueue.imagePullPolicy" -}}
{{- (merge (dict) (.image | default dict) .root.Values.image).pullPolicy }}
{{- end }}

{{/* The service's url inside the cluster. */}}
{{- define "perfectqueue.serviceUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "perfectqueue.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}

{{/* The service's settings file: the values' `config` and what the chart decides. */}}
{{- define "perfectqueue.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $_ := set $config "host" "0.0.0.0" }}
{{- $_ = set $config "port" (int .Values.service.port) }}
{{- $_ = set $config "shutdown_grace" .Values.service.shutdownGrace }}
{{- $_ = set $config "log_format" .Values.logFormat }}
{{- $_ = set $config "sqs" .Values.sqs.enabled }}
{{- $_ = set $config "sqs_clock_skew" (int .Values.sqs.clockSkew) }}
{{- if .Values.service.insecure }}
{{- $_ = set $config "insecure" true }}
{{- end }}
{{- include "perfectqueue.refusePasswords" $config }}
{{- toYaml $config }}
{{- end }}

{{/* The settings file is a ConfigMap: a database password in it (`user:password@`, as SQLAlchemy
     reads a url, or a `password`/`passwd` parameter) fails the rendering. The service reads
     only its top-level url from the environment (PERFECTQUEUE_URL, from the Secret); a queue's
     url comes from the file alone, so a queue cannot have credentials of its own here. */}}
{{- define "perfectqueue.refusePasswords" -}}
{{- $password := `://[^/?#@:"]*:[^@"]*@|(?i:[?&]|\\u0026)(?i:password|passwd)=` }}
{{- $advice := "a ConfigMap is no place for it. The service reads a queue's url from the settings file only, never from a Secret: drop the queue's url (it then uses the service-wide database, whose url with its password goes in database.url or in your existingSecret), or give that database a release of its own with its url in that release's database.url or existingSecret (docs/kubernetes.md)" }}
{{- range $name, $queue := .queues }}
{{- if regexMatch $password (toJson $queue) }}
{{- fail (printf "config.queues.%s.url holds a database password: %s" $name $advice) }}
{{- end }}
{{- end }}
{{- if regexMatch $password (toJson .) }}
{{- fail (printf "config holds a database password: %s" $advice) }}
{{- end }}
{{- end }}

{{/* The worker's settings file: the values' `worker.config`, the service's url, the token and
     a kill limit that ends the children before Kubernetes does. */}}
{{- define "perfectqueue.workerConfig" -}}
{{- $config := deepCopy .Values.worker.config }}
{{- $_ := set $config "url" (default (include "perfectqueue.serviceUrl" .) $config.url) }}
{{- if .Values.worker.token }}
{{- $_ = set $config "token" .Values.worker.token }}
{{- end }}
{{- if not (hasKey $config "child_graceful_kill_limit") }}
{{- $_ = set $config "child_graceful_kill_limit" (max 1 (sub (int .Values.worker.terminationGracePeriodSeconds) (int .Values.worker.killMargin))) }}
{{- end }}
{{- if .Values.worker.metricsPort }}
{{- $_ = set $config "metrics_port" (int .Values.worker.metricsPort) }}
{{- end }}
{{- if not (hasKey $config "log_format") }}
{{- $_ = set $config "log_format" .Values.logFormat }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* Environment of every container that reads the service's settings. */}}
{{- define "perfectqueue.settingsEnv" -}}
- name: PERFECTQUEUE_CONFIG
  value: /etc/perfectqueue/perfectqueue.yml
- name: PERFECTQUEUE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .root.Values.secretKeys.url }}
- name: PERFECTQUEUE_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .root.Values.secretKeys.apiKeys }}
      optional: true
{{- end }}

{{/* The pod's writable paths: the root filesystem is read-only. */}}
{{- define "perfectqueue.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSize }}
{{- end }}

{{/* The queue `helm test` submits to: tests.queue, else the first declared queue. */}}
{{- define "perfectqueue.testQueue" -}}
{{- if .Values.tests.queue }}
{{- .Values.tests.queue }}
{{- else if .Values.config.queues }}
{{- keys .Values.config.queues | sortAlpha | first }}
{{- else }}
{{- default "default" .Values.config.table }}
{{- end }}
{{- end }}
