{{/* The chart's name, shortened to what a label value allows. */}}
{{- define "psi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name: the release name when it already contains the chart's name. */}}
{{- define "psi.fullname" -}}
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

{{- define "psi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "psi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "psi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "psi.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "psi.serviceAccountName" -}}
{{- default (include "psi.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The reconciler's own identity. */}}
{{- define "psi.reconcilerServiceAccountName" -}}
{{- printf "%s-reconciler" (include "psi.serviceAccountName" .) -}}
{{- end -}}

{{/* The Secret (type kubernetes.io/tls) mounted at /etc/webhook/certs. */}}
{{- define "psi.certSecretName" -}}
{{- default (printf "%s-tls" (include "psi.fullname" .)) .Values.certificates.secretName -}}
{{- end -}}

{{/* The cert-manager Certificate whose CA is injected into the webhook configuration. */}}
{{- define "psi.servingCertificateName" -}}
{{- printf "%s-serving" (include "psi.fullname" .) -}}
{{- end -}}

{{/* DNS names the API server uses to reach the Service. */}}
{{- define "psi.serviceDNSNames" -}}
{{- $svc := include "psi.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson -}}
{{- end -}}

{{/* The file that holds the webhook's RBAC rules, written once for the chart and the tests. */}}
{{- define "psi.rbac" -}}
{{- .Files.Get "files/rbac.yaml" -}}
{{- end -}}

{{/* Namespaces never sent to the webhook (namespaceSelector and --exclude-namespace). */}}
{{- define "psi.excludedNamespaces" -}}
{{- concat (list .Release.Namespace "kube-system" "kube-public" "kube-node-lease") .Values.excludeNamespaces | uniq | toJson -}}
{{- end -}}

{{/* Milliseconds of a duration value like 500ms, 5s, 10m, 1h or 5 (seconds). */}}
{{- define "psi.millis" -}}
{{- $d := toString . -}}
{{- if hasSuffix "ms" $d -}}{{ trimSuffix "ms" $d | int }}
{{- else if hasSuffix "s" $d -}}{{ mul (trimSuffix "s" $d | int) 1000 }}
{{- else if hasSuffix "m" $d -}}{{ mul (trimSuffix "m" $d | int) 60000 }}
{{- else if hasSuffix "h" $d -}}{{ mul (trimSuffix "h" $d | int) 3600000 }}
{{- else -}}{{ mul ($d | int) 1000 }}
{{- end -}}
{{- end -}}

{{/* Values that the schema cannot check against each other. */}}
{{- define "psi.validate" -}}
{{- $grace := mul (int .Values.terminationGracePeriodSeconds) 1000 -}}
{{- $drain := include "psi.millis" .Values.drainDelay | int -}}
{{- $preStop := mul (int .Values.preStopSleepSeconds) 1000 -}}
{{- if ge (add $preStop $drain) $grace -}}
{{- fail (printf "preStopSleepSeconds (%d) + drainDelay (%s) must be below terminationGracePeriodSeconds (%d)" (int .Values.preStopSleepSeconds) .Values.drainDelay (int .Values.terminationGracePeriodSeconds)) -}}
{{- end -}}
{{- if ge (include "psi.millis" .Values.deadline | int) (mul (int .Values.timeoutSeconds) 1000) -}}
{{- fail (printf "deadline (%s) must be below timeoutSeconds (%d): the API server must get the webhook's answer, not a timeout" .Values.deadline (int .Values.timeoutSeconds)) -}}
{{- end -}}
{{- if and (eq (include "psi.certificatesMode" .) "cert-manager") .Values.certificates.certManager.issuerRef (not .Values.certificates.certManager.issuerRef.name) -}}
{{- fail "certificates.certManager.issuerRef needs a name" -}}
{{- end -}}
{{- if and (not .Values.admissionPolicy.enabled) (not .Values.admissionPolicy.acceptUnguardedSecretWrites) -}}
{{- fail "admissionPolicy.enabled=false leaves the project's identities free to create and patch Secrets of any type in every namespace (service-account tokens included): set admissionPolicy.acceptUnguardedSecretWrites=true to state that risk, or keep the policy" -}}
{{- end -}}
{{- end -}}

{{/* Every namespace whose catalogs' pull secrets the webhook reads, as a JSON list: the global
catalog namespace first, then catalogNamespaces. */}}
{{- define "psi.catalogNamespaces" -}}
{{- prepend .Values.catalogNamespaces .Values.globalCatalogNamespace | uniq | toJson -}}
{{- end -}}

{{/* Labels of a pod of one component (webhook or reconciler): (dict "ctx" . "component" ...). */}}
{{- define "psi.podLabels" -}}
{{ include "psi.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- with .ctx.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod-level fields both Deployments share. */}}
{{- define "psi.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  # No fixed UID: OpenShift's restricted SCC assigns one; the image's USER is numeric.
  runAsNonRoot: true
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container fields both Deployments share: the image, the environment, the probes on the
admin port (ready once every watch has synced, false while draining), resources and the
restricted security context. */}}
{{- define "psi.containerCommon" -}}
{{ include "psi.image" . }}
env:
  # The replica's identity in the Lease and in Events.
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  # --namespace: the release namespace (never mutated; holds the Lease).
  - name: POD_NAMESPACE
    valueFrom:
      fieldRef:
        fieldPath: metadata.namespace
  - name: RUST_LOG
    value: {{ .Values.logLevel | quote }}
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 2
  failureThreshold: 1
resources:
  {{- toYaml .Values.resources | nindent 2 }}
{{ include "psi.containerSecurityContext" . }}
{{- end -}}

{{/* The image, by tag and, when image.digest is set, pinned by digest. */}}
{{- define "psi.image" -}}
image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{ with .Values.image.digest }}@{{ . }}{{ end }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- end -}}

{{/* The restricted security context of every container of the chart. */}}
{{- define "psi.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end -}}

{{/* Arguments both roles take: the log format and what the one resolver is configured with. */}}
{{- define "psi.resolverArgs" -}}
- --log-format={{ .Values.logFormat }}
- --global-catalog-namespace={{ .Values.globalCatalogNamespace }}
{{- with .Values.catalogNamespaces }}
- --catalog-namespace={{ join "," . }}
{{- end }}
{{- with .Values.excludeNamespaces }}
- --exclude-namespace={{ join "," . }}
{{- end }}
{{- with .Values.includeNamespaces }}
- --include-namespace={{ join "," . }}
{{- end }}
{{- end -}}

{{/* The certificate mode in effect: `auto` is `openshift` where the OpenShift service CA serves
(the cluster has config.openshift.io/v1) and `self-signed` elsewhere, including a `helm template`
without a cluster. */}}
{{- define "psi.certificatesMode" -}}
{{- if ne .Values.certificates.mode "auto" -}}
{{- .Values.certificates.mode -}}
{{- else if .Capabilities.APIVersions.Has "config.openshift.io/v1" -}}
openshift
{{- else -}}
self-signed
{{- end -}}
{{- end -}}
