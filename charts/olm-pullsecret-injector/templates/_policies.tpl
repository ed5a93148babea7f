{{- /*
The two ValidatingAdmissionPolicies that narrow what RBAC cannot, with their bindings. Rendered
for the webhook and reconciler identities (admission-policy.yaml) and, as hooks of their own, for
the cleanup hook's identity (cleanup-hook.yaml). Arguments: ctx (the root context), name (the
policy's name), users (the usernames it applies to), annotations (extra metadata annotations).
*/ -}}

{{- define "psi.policyMetadata" -}}
name: {{ .name }}
labels:
  {{- include "psi.labels" .ctx | nindent 2 }}
{{- with .annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- /*
RBAC cannot narrow `create secrets` (and `create secrets` can mint service-account tokens): this
policy lets the given identities create, update and delete only managed copies, that is Secrets
of the two pull-secret types labelled app.kubernetes.io/managed-by=olm-pullsecret-injector. An
update's answer carries the whole Secret, so refusing every other update also keeps a `patch`
from reading one.
*/ -}}
{{- define "psi.managedSecretsPolicy" -}}
{{- $fullname := include "psi.fullname" .ctx -}}
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  {{- include "psi.policyMetadata" . | nindent 2 }}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: [v1]
        operations: [CREATE, UPDATE, DELETE]
        resources: [secrets]
  matchConditions:
    - name: the-projects-service-accounts
      expression: request.userInfo.username in {{ toJson .users }}
  variables:
    - name: pullSecretTypes
      expression: "['kubernetes.io/dockerconfigjson', 'kubernetes.io/dockercfg']"
    - name: objectIsManagedCopy
      expression: >-
        object != null && has(object.type) && object.type in variables.pullSecretTypes &&
        has(object.metadata.labels) && 'app.kubernetes.io/managed-by' in object.metadata.labels &&
        object.metadata.labels['app.kubernetes.io/managed-by'] == 'olm-pullsecret-injector'
    - name: oldObjectIsManagedCopy
      expression: >-
        oldObject != null && has(oldObject.type) && oldObject.type in variables.pullSecretTypes &&
        has(oldObject.metadata.labels) && 'app.kubernetes.io/managed-by' in oldObject.metadata.labels &&
        oldObject.metadata.labels['app.kubernetes.io/managed-by'] == 'olm-pullsecret-injector'
  validations:
    - expression: request.operation == 'DELETE' || variables.objectIsManagedCopy
      messageExpression: >-
        '{{ $fullname }} may only ' + (request.operation == 'CREATE' ? 'create' : 'update') +
        ' Secrets of type kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg labelled' +
        ' app.kubernetes.io/managed-by=olm-pullsecret-injector (managed pull-secret copies)'
      reason: Forbidden
    - expression: request.operation == 'CREATE' || variables.oldObjectIsManagedCopy
      messageExpression: >-
        '{{ $fullname }} may only ' + (request.operation == 'DELETE' ? 'delete' : 'update') +
        ' its own managed pull-secret copies (Secrets of type kubernetes.io/dockerconfigjson or' +
        ' kubernetes.io/dockercfg labelled app.kubernetes.io/managed-by=olm-pullsecret-injector)'
      reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  {{- include "psi.policyMetadata" . | nindent 2 }}
spec:
  policyName: {{ .name }}
  validationActions: [Deny]
{{- end }}

{{- /*
RBAC cannot narrow `patch serviceaccounts` to one field: this policy lets the given identities
change only `imagePullSecrets` and the annotation pullsecret-injector.io/injected of a
ServiceAccount, only outside the platform namespaces, and never create or delete one.
*/ -}}
{{- define "psi.serviceAccountsPolicy" -}}
{{- $fullname := include "psi.fullname" .ctx -}}
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  {{- include "psi.policyMetadata" . | nindent 2 }}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: [v1]
        operations: [CREATE, UPDATE, DELETE]
        resources: [serviceaccounts]
  matchConditions:
    - name: the-projects-service-accounts
      expression: request.userInfo.username in {{ toJson .users }}
  variables:
    - name: ours
      expression: "'pullsecret-injector.io/injected'"
    - name: newAnnotations
      expression: "object != null && has(object.metadata.annotations) ? object.metadata.annotations : {}"
    - name: oldAnnotations
      expression: "oldObject != null && has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {}"
    - name: otherAnnotationsKept
      expression: >-
        variables.oldAnnotations.all(k, k == variables.ours ||
          (k in variables.newAnnotations && variables.newAnnotations[k] == variables.oldAnnotations[k])) &&
        variables.newAnnotations.all(k, k == variables.ours || k in variables.oldAnnotations)
    - name: restKept
      expression: >-
        (has(object.metadata.labels) ? object.metadata.labels : {}) == (has(oldObject.metadata.labels) ? oldObject.metadata.labels : {}) &&
        (has(object.metadata.ownerReferences) ? object.metadata.ownerReferences : []) == (has(oldObject.metadata.ownerReferences) ? oldObject.metadata.ownerReferences : []) &&
        (has(object.metadata.finalizers) ? object.metadata.finalizers : []) == (has(oldObject.metadata.finalizers) ? oldObject.metadata.finalizers : []) &&
        (has(object.secrets) ? object.secrets : []) == (has(oldObject.secrets) ? oldObject.secrets : []) &&
        has(object.automountServiceAccountToken) == has(oldObject.automountServiceAccountToken) &&
        (!has(object.automountServiceAccountToken) || object.automountServiceAccountToken == oldObject.automountServiceAccountToken)
  validations:
    - expression: request.operation == 'UPDATE'
      message: "{{ $fullname }} may only update ServiceAccounts, never create or delete one"
      reason: Forbidden
    - expression: >-
        !request.namespace.startsWith('kube-') && !(request.namespace in {{ include "psi.excludedNamespaces" .ctx }}) &&
        (!request.namespace.startsWith('openshift-') || request.namespace == 'openshift-operators'{{ with .ctx.Values.includeNamespaces }} || request.namespace in {{ toJson . }}{{ end }})
      message: "{{ $fullname }} may not change ServiceAccounts of platform or excluded namespaces"
      reason: Forbidden
    - expression: request.operation != 'UPDATE' || (variables.otherAnnotationsKept && variables.restKept)
      message: "{{ $fullname }} may only change imagePullSecrets and the annotation pullsecret-injector.io/injected of a ServiceAccount"
      reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  {{- include "psi.policyMetadata" . | nindent 2 }}
spec:
  policyName: {{ .name }}
  validationActions: [Deny]
{{- end }}
