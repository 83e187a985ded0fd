{{/* Name of the chart's objects: the release name, plus "-fjord-operator" unless it already says so. */}}
{{- define "fjord-operator.fullname" -}}
{{- if contains "fjord-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-fjord-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fjord-operator.selectorLabels" -}}
app.kubernetes.io/name: fjord-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fjord-operator.labels" -}}
{{ include "fjord-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fjord
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "fjord-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fjord-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fjord-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* "true" or "false": leader election, on by default exactly when replicas > 1. */}}
{{- define "fjord-operator.leaderElection" -}}
{{- if kindIs "bool" .Values.leaderElection.enabled -}}
{{- .Values.leaderElection.enabled -}}
{{- else -}}
{{- gt (int .Values.replicas) 1 -}}
{{- end -}}
{{- end -}}

{{/*
  What the operator does in the namespaces it watches (read from operator/src): watch its three
  resources, patch their status (and topics/users for their finalizer), own StatefulSets,
  ConfigMaps, Services, PodDisruptionBudgets, ServiceAccounts and user Secrets (server-side
  apply = create + patch), delete stale listener Services and deleted users' Secrets, and
  publish events.k8s.io Events. It never reads Pods or PersistentVolumeClaims (readiness comes
  from the StatefulSet's status, claims are retained or deleted by the StatefulSet's policy).
*/}}
{{- define "fjord-operator.workloadRules" }}
# patch: the roller removes kafka.fjord.dev/manual-rolling-update once its roll is done.
- apiGroups: ["kafka.fjord.dev"]
  resources: ["kafkas"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["kafka.fjord.dev"]
  resources: ["kafkatopics", "kafkausers"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["kafka.fjord.dev"]
  resources: ["kafkas/status", "kafkatopics/status", "kafkausers/status"]
  verbs: ["patch"]
# ownerReferences with blockOwnerDeletion on objects owned by a Kafka or KafkaUser.
- apiGroups: ["kafka.fjord.dev"]
  resources: ["kafkas/finalizers", "kafkausers/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The roller reads broker pods and deletes one at a time (updateStrategy OnDelete).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# One NetworkPolicy per Kafka: only brokers reach the replication and controller ports.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
{{- define "fjord-operator.nodeRules" }}
# Node addresses for nodeport listeners' status.listeners[].bootstrapServers.
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list"]
{{- end }}

{{/* "true" or "false": render the PodMonitors and the PrometheusRule. null (the default) means
     "when the cluster serves the Prometheus Operator's monitoring.coreos.com/v1 API". */}}
{{- define "fjord-operator.monitoring" -}}
{{- if kindIs "bool" .Values.monitoring.enabled -}}
{{- .Values.monitoring.enabled -}}
{{- else -}}
{{- .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}
{{- end -}}
{{- end -}}
