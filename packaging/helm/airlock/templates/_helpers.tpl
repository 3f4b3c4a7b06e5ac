{{/* The chart's name, and the release's full name (at most 63 characters, a DNS label). */}}
{{- define "airlock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "airlock.fullname" -}}
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

{{- define "airlock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "airlock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "airlock.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "airlock.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "airlock.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "airlock.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "airlock.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The environment variable of a vault's credential: AIRLOCK_VAULT_<NAME>_<WHAT>. */}}
{{- define "airlock.vaultEnv" -}}
{{- printf "AIRLOCK_VAULT_%s_%s" (.name | upper | replace "-" "_") .what -}}
{{- end -}}

{{/*
The values the chart refuses, each with what to set instead. Included by the workload, so that
`helm template` and `helm install` fail before anything is applied.
*/}}
{{- define "airlock.validate" -}}
{{- $v := .Values -}}
{{- if not (has $v.store.kind (list "sqlite" "postgres")) -}}
{{- fail (printf "store.kind %q: sqlite (one broker, a StatefulSet) or postgres (replicas, a Deployment)" $v.store.kind) -}}
{{- end -}}
{{- if not (has $v.masterKey.wrap (list "file" "transit" "aws_kms")) -}}
{{- fail (printf "masterKey.wrap %q: file, transit or aws_kms (passphrase and systemd_creds need a terminal or the host)" $v.masterKey.wrap) -}}
{{- end -}}
{{- if lt (int $v.replicas) 1 -}}
{{- fail "replicas must be at least 1" -}}
{{- end -}}
{{- if eq $v.store.kind "sqlite" -}}
{{- if ne (int $v.replicas) 1 -}}
{{- fail (printf "replicas %v with store.kind sqlite: one broker writes store.db, so sqlite runs exactly 1 replica; for more, use store.kind postgres" $v.replicas) -}}
{{- end -}}
{{- else -}}
{{- if not $v.store.postgres.url -}}
{{- fail "store.kind postgres needs store.postgres.url (postgres://user@host:5432/database, without a password)" -}}
{{- end -}}
{{- if regexMatch "^[a-z]+://[^/@]*:[^/@]*@" $v.store.postgres.url -}}
{{- fail "store.postgres.url holds a password: keep it in the Secret store.postgres.existingSecret (PGPASSWORD), not in the ConfigMap" -}}
{{- end -}}
{{- if not $v.store.postgres.existingSecret -}}
{{- fail "store.kind postgres needs store.postgres.existingSecret: the Secret with the database password (key store.postgres.passwordKey)" -}}
{{- end -}}
{{- if eq $v.masterKey.wrap "file" -}}
{{- fail "store.kind postgres needs masterKey.wrap transit or aws_kms: the replicas share the key files through keys.backupSecret, and a raw master key must not sit in a Kubernetes Secret" -}}
{{- end -}}
{{- if not $v.keys.backupSecret -}}
{{- fail "store.kind postgres needs keys.backupSecret: the Secret with an `airlock backup` file (key keys.backupKey) that every replica restores its key files from" -}}
{{- end -}}
{{- end -}}
{{- if eq $v.masterKey.wrap "transit" -}}
{{- if not $v.masterKey.transit.vault -}}
{{- fail "masterKey.wrap transit needs masterKey.transit.vault: the entry of vaults whose transit engine wraps the key" -}}
{{- end -}}
{{- if not (hasKey $v.vaults $v.masterKey.transit.vault) -}}
{{- fail (printf "masterKey.transit.vault %q is not an entry of vaults" $v.masterKey.transit.vault) -}}
{{- end -}}
{{- end -}}
{{- if eq $v.masterKey.wrap "aws_kms" -}}
{{- if or (not $v.masterKey.awsKms.keyId) (not $v.masterKey.awsKms.region) -}}
{{- fail "masterKey.wrap aws_kms needs masterKey.awsKms.keyId and masterKey.awsKms.region" -}}
{{- end -}}
{{- if not $v.masterKey.awsKms.existingSecret -}}
{{- fail "masterKey.wrap aws_kms needs masterKey.awsKms.existingSecret: the Secret with the AWS credentials JSON (key masterKey.awsKms.credentialsKey)" -}}
{{- end -}}
{{- end -}}
{{- range $name, $vault := $v.vaults -}}
{{- if not (regexMatch "^[a-z][a-z0-9_-]{0,63}$" $name) -}}
{{- fail (printf "vaults.%s: a vault name is [a-z][a-z0-9_-]{0,63}" $name) -}}
{{- end -}}
{{- if not $vault.addr -}}
{{- fail (printf "vaults.%s needs addr (https://host:port)" $name) -}}
{{- end -}}
{{- if not $vault.existingSecret -}}
{{- fail (printf "vaults.%s needs existingSecret: the Secret with its login credential" $name) -}}
{{- end -}}
{{- $method := default "token" (($vault.auth | default dict).method) -}}
{{- if not (has $method (list "token" "approle")) -}}
{{- fail (printf "vaults.%s.auth.method %q: token or approle" $name $method) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Service's names, which the broker accepts as Host on /mcp. */}}
{{- define "airlock.serviceHosts" -}}
{{- $svc := include "airlock.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson -}}
{{- end -}}

{{/* airlock.toml */}}
{{- define "airlock.config" -}}
{{- $v := .Values -}}
{{- $hosts := concat (include "airlock.serviceHosts" . | fromJsonArray) $v.server.allowedHosts -}}
# Rendered by the airlock Helm chart from its values (values.yaml documents each one).
[server]
listen = "0.0.0.0:7878"
allowed_hosts = {{ $hosts | toJson }}
allowed_origins = {{ $v.server.allowedOrigins | default list | toJson }}
{{- if $v.socket.enabled }}
socket = "/run/airlock/airlock.sock"
socket_mode = 0o660
{{- else }}
socket = "off"
{{- end }}

[store]
data_dir = "/var/lib/airlock/data"
sync = {{ $v.store.sync | toJson }}
{{- if eq $v.store.kind "postgres" }}
url = {{ $v.store.postgres.url | toJson }}
{{- end }}

[store.master_key]
wrap = {{ $v.masterKey.wrap | toJson }}
{{- if eq $v.masterKey.wrap "transit" }}
vault = {{ $v.masterKey.transit.vault | toJson }}
transit_key = {{ default "transit/airlock-master" $v.masterKey.transit.key | toJson }}
{{- else if eq $v.masterKey.wrap "aws_kms" }}
kms_key_id = {{ $v.masterKey.awsKms.keyId | toJson }}
aws_region = {{ $v.masterKey.awsKms.region | toJson }}
aws_credentials = "env:AIRLOCK_KMS_CREDENTIALS"
{{- with $v.masterKey.awsKms.endpoint }}
aws_endpoint = {{ . | toJson }}
{{- end }}
{{- end }}

[shares]
base_url = {{ default (printf "https://%s.%s.svc" (include "airlock.fullname" .) .Release.Namespace) $v.server.publicUrl | toJson }}
{{- range $name, $vault := $v.vaults }}
{{- $auth := $vault.auth | default dict }}

[vaults.{{ $name }}]
kind = {{ default "openbao" $vault.kind | toJson }}
addr = {{ $vault.addr | toJson }}
{{- with $vault.caCert }}
ca_cert = {{ . | toJson }}
{{- end }}
{{- with $vault.namespace }}
namespace = {{ . | toJson }}
{{- end }}
{{- with $vault.cacheTtlSeconds }}
cache_ttl_seconds = {{ . }}
{{- end }}
{{- if eq (default "token" $auth.method) "approle" }}
auth = { method = "approle", role_id = "env:{{ include "airlock.vaultEnv" (dict "name" $name "what" "ROLE_ID") }}", secret_id = "env:{{ include "airlock.vaultEnv" (dict "name" $name "what" "SECRET_ID") }}"{{ with $auth.mount }}, mount = {{ . | toJson }}{{ end }} }
{{- else }}
auth = { method = "token", token = "env:{{ include "airlock.vaultEnv" (dict "name" $name "what" "TOKEN") }}" }
{{- end }}
{{- end }}
{{- with $v.config }}

{{ . }}
{{- end }}
{{- end -}}

{{/* The environment of the broker and its init container: credentials from the Secrets only. */}}
{{- define "airlock.env" -}}
{{- $v := .Values -}}
- name: AIRLOCK_CONFIG
  value: /etc/airlock/airlock.toml
- name: MALLOC_ARENA_MAX
  value: "2"
{{- if eq $v.store.kind "postgres" }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.store.postgres.existingSecret }}
      key: {{ $v.store.postgres.passwordKey }}
{{- end }}
{{- if eq $v.masterKey.wrap "aws_kms" }}
- name: AIRLOCK_KMS_CREDENTIALS
  valueFrom:
    secretKeyRef:
      name: {{ $v.masterKey.awsKms.existingSecret }}
      key: {{ $v.masterKey.awsKms.credentialsKey }}
{{- end }}
{{- range $name, $vault := $v.vaults }}
{{- $auth := $vault.auth | default dict }}
{{- if eq (default "token" $auth.method) "approle" }}
- name: {{ include "airlock.vaultEnv" (dict "name" $name "what" "ROLE_ID") }}
  valueFrom:
    secretKeyRef:
      name: {{ $vault.existingSecret }}
      key: {{ default "role_id" $auth.roleIdKey }}
- name: {{ include "airlock.vaultEnv" (dict "name" $name "what" "SECRET_ID") }}
  valueFrom:
    secretKeyRef:
      name: {{ $vault.existingSecret }}
      key: {{ default "secret_id" $auth.secretIdKey }}
{{- else }}
- name: {{ include "airlock.vaultEnv" (dict "name" $name "what" "TOKEN") }}
  valueFrom:
    secretKeyRef:
      name: {{ $vault.existingSecret }}
      key: {{ default "token" $auth.tokenKey }}
{{- end }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Every container's security context: non-root, read-only, no privilege, no capability. */}}
{{- define "airlock.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* What every init container has besides its name and arguments. */}}
{{- define "airlock.initContainerRest" -}}
env:
  {{- include "airlock.env" . | nindent 2 }}
{{- with .Values.extraEnvFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "airlock.containerSecurityContext" . | nindent 2 }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
volumeMounts:
  - name: config
    mountPath: /etc/airlock/airlock.toml
    subPath: airlock.toml
    readOnly: true
  - name: data
    mountPath: /var/lib/airlock
  - name: tmp
    mountPath: /tmp
  {{- if eq .Values.store.kind "postgres" }}
  - name: backup
    mountPath: /etc/airlock/backup
    readOnly: true
  {{- end }}
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}
