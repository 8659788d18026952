"""How Go's JSON encoding treats each upstream field: facts the schema model does not carry.

A protobuf body written by client-go carries every non-pointer scalar even when it is zero (an empty
name, ``replicas`` 0, ``hostNetwork`` false), while the same object written as JSON drops the zero values
of ``omitempty`` fields and keeps them for pointer fields and for fields without ``omitempty``. To turn a
protobuf body into exactly the JSON kubectl would have sent, the decoder must know which of those each
field is. `podvisor.schema.model.Field` has no such flag, so the facts live here, read from the upstream
Go type declarations (k8s.io/api and apimachinery meta/v1 at v0.36.3, the release the schema data is
generated from) and kept as data.

``PRESENCE[struct][json field]`` is one letter:
  ``p``  a pointer scalar with ``omitempty``: a zero value on the wire is kept, absence stays absent;
  ``n``  a non-pointer scalar without ``omitempty``: always in JSON (its zero value when absent);
  ``N``  a pointer, slice or map without ``omitempty``: ``null`` in JSON when absent.
Fields not listed are ``omitempty`` non-pointers: zero values are omitted. Fields flattened in from an
embedded struct (Volume's VolumeSource) are listed under the outer struct.

If the model grows a per-field flag for this, the table should move into the schema data.
"""

from __future__ import annotations

__all__ = ["PRESENCE", "presence_flags"]

_API = "io.k8s.api."
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."


def _parse(text: str) -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {}
    for line in text.split("\n"):
        if line.strip():
            short, *items = line.split()
            name = _META + short[len("meta.v1.") :] if short.startswith("meta.v1.") else _API + short
            table[name] = dict(item.split(":", 1) for item in items)
    return table


def presence_flags(struct: str, field: str) -> str:
    """The letter for one field ("" for an ordinary ``omitempty`` non-pointer)."""
    return PRESENCE.get(struct, {}).get(field, "")


PRESENCE = _parse(
    """
apps.v1.ControllerRevision revision:n
apps.v1.ControllerRevisionList items:N
apps.v1.DaemonSetCondition type:n
apps.v1.DaemonSetList items:N
apps.v1.DaemonSetSpec selector:N revisionHistoryLimit:p
apps.v1.DaemonSetStatus currentNumberScheduled:n numberMisscheduled:n desiredNumberScheduled:n numberReady:n collisionCount:p
apps.v1.DeploymentCondition type:n
apps.v1.DeploymentList items:N
apps.v1.DeploymentSpec replicas:p selector:N revisionHistoryLimit:p progressDeadlineSeconds:p
apps.v1.DeploymentStatus terminatingReplicas:p collisionCount:p
apps.v1.ReplicaSetCondition type:n
apps.v1.ReplicaSetList items:N
apps.v1.ReplicaSetSpec replicas:p selector:N
apps.v1.ReplicaSetStatus replicas:n terminatingReplicas:p
apps.v1.RollingUpdateStatefulSetStrategy partition:p
apps.v1.StatefulSetCondition type:n
apps.v1.StatefulSetList items:N
apps.v1.StatefulSetOrdinals start:n
apps.v1.StatefulSetSpec replicas:p selector:N serviceName:n revisionHistoryLimit:p
apps.v1.StatefulSetStatus replicas:n collisionCount:p availableReplicas:n
authentication.v1.TokenRequestSpec audiences:N expirationSeconds:N boundObjectRef:N
authentication.v1.TokenRequestStatus token:n
authorization.v1.NonResourceRule verbs:N
authorization.v1.ResourceRule verbs:N
authorization.v1.SubjectAccessReviewStatus allowed:n
authorization.v1.SubjectRulesReviewStatus resourceRules:N nonResourceRules:N incomplete:n
autoscaling.v1.ContainerResourceMetricSource targetAverageUtilization:p container:n
autoscaling.v1.ContainerResourceMetricStatus currentAverageUtilization:p container:n
autoscaling.v1.CrossVersionObjectReference kind:n name:n
autoscaling.v1.ExternalMetricSource metricName:n
autoscaling.v1.ExternalMetricStatus metricName:n
autoscaling.v1.HorizontalPodAutoscalerCondition type:n
autoscaling.v1.HorizontalPodAutoscalerList items:N
autoscaling.v1.HorizontalPodAutoscalerSpec minReplicas:p maxReplicas:n targetCPUUtilizationPercentage:p
autoscaling.v1.HorizontalPodAutoscalerStatus observedGeneration:p currentReplicas:n desiredReplicas:n currentCPUUtilizationPercentage:p
autoscaling.v1.MetricSpec type:n
autoscaling.v1.MetricStatus type:n
autoscaling.v1.ObjectMetricSource metricName:n
autoscaling.v1.ObjectMetricStatus metricName:n
autoscaling.v1.PodsMetricSource metricName:n
autoscaling.v1.PodsMetricStatus metricName:n
autoscaling.v1.ResourceMetricSource targetAverageUtilization:p
autoscaling.v1.ResourceMetricStatus currentAverageUtilization:p
autoscaling.v1.ScaleStatus replicas:n
autoscaling.v2.ContainerResourceMetricSource container:n
autoscaling.v2.ContainerResourceMetricStatus container:n
autoscaling.v2.CrossVersionObjectReference kind:n name:n
autoscaling.v2.HPAScalingPolicy type:n value:n periodSeconds:n
autoscaling.v2.HPAScalingRules stabilizationWindowSeconds:p selectPolicy:p
autoscaling.v2.HorizontalPodAutoscalerCondition type:n
autoscaling.v2.HorizontalPodAutoscalerList items:N
autoscaling.v2.HorizontalPodAutoscalerSpec minReplicas:p maxReplicas:n
autoscaling.v2.HorizontalPodAutoscalerStatus observedGeneration:p desiredReplicas:n currentMetrics:N
autoscaling.v2.MetricIdentifier name:n
autoscaling.v2.MetricSpec type:n
autoscaling.v2.MetricStatus type:n
autoscaling.v2.MetricTarget type:n averageUtilization:p
autoscaling.v2.MetricValueStatus averageUtilization:p
batch.v1.CronJobList items:N
batch.v1.CronJobSpec schedule:n timeZone:p startingDeadlineSeconds:p suspend:p successfulJobsHistoryLimit:p failedJobsHistoryLimit:p
batch.v1.JobCondition type:n
batch.v1.JobList items:N
batch.v1.JobSpec parallelism:p completions:p activeDeadlineSeconds:p backoffLimit:p backoffLimitPerIndex:p maxFailedIndexes:p manualSelector:p ttlSecondsAfterFinished:p completionMode:p suspend:p podReplacementPolicy:p managedBy:p
batch.v1.JobStatus terminating:p failedIndexes:p ready:p
batch.v1.PodFailurePolicy rules:N
batch.v1.PodFailurePolicyOnExitCodesRequirement containerName:p operator:n values:N
batch.v1.PodFailurePolicyRule action:n
batch.v1.SuccessPolicy rules:N
batch.v1.SuccessPolicyRule succeededIndexes:p succeededCount:p
coordination.v1.LeaseList items:N
coordination.v1.LeaseSpec holderIdentity:p leaseDurationSeconds:p leaseTransitions:p strategy:p preferredHolder:p
core.v1.AWSElasticBlockStoreVolumeSource volumeID:n
core.v1.AppArmorProfile type:n localhostProfile:p
core.v1.AttachedVolume name:n devicePath:n
core.v1.AzureDiskVolumeSource diskName:n diskURI:n cachingMode:p fsType:p readOnly:p kind:p
core.v1.AzureFilePersistentVolumeSource secretName:n shareName:n secretNamespace:N
core.v1.AzureFileVolumeSource secretName:n shareName:n
core.v1.CSIPersistentVolumeSource driver:n volumeHandle:n
core.v1.CSIVolumeSource driver:n readOnly:p fsType:p
core.v1.CephFSPersistentVolumeSource monitors:N
core.v1.CephFSVolumeSource monitors:N
core.v1.CinderPersistentVolumeSource volumeID:n
core.v1.CinderVolumeSource volumeID:n
core.v1.ClientIPConfig timeoutSeconds:p
core.v1.ClusterTrustBundleProjection name:p signerName:p optional:p path:n
core.v1.ComponentCondition type:n status:n
core.v1.ComponentStatusList items:N
core.v1.ConfigMap immutable:p
core.v1.ConfigMapEnvSource optional:p
core.v1.ConfigMapKeySelector key:n optional:p
core.v1.ConfigMapList items:N
core.v1.ConfigMapNodeConfigSource namespace:n name:n kubeletConfigKey:n
core.v1.ConfigMapProjection optional:p
core.v1.ConfigMapVolumeSource defaultMode:p optional:p
core.v1.Container name:n restartPolicy:p
core.v1.ContainerExtendedResourceRequest containerName:n resourceName:n requestName:n
core.v1.ContainerImage names:N
core.v1.ContainerPort containerPort:n
core.v1.ContainerResizePolicy resourceName:n restartPolicy:n
core.v1.ContainerStateTerminated exitCode:n
core.v1.ContainerStatus name:n ready:n restartCount:n image:n imageID:n started:p stopSignal:p
core.v1.DaemonEndpoint Port:n
core.v1.DownwardAPIVolumeFile path:n mode:p
core.v1.DownwardAPIVolumeSource defaultMode:p
core.v1.EndpointAddress ip:n nodeName:p
core.v1.EndpointPort port:n appProtocol:p
core.v1.EndpointsList items:N
core.v1.EnvVar name:n
core.v1.EphemeralContainer name:n restartPolicy:p
core.v1.EphemeralContainerCommon name:n restartPolicy:p
core.v1.Event reportingComponent:n reportingInstance:n
core.v1.EventList items:N
core.v1.FCVolumeSource lun:p
core.v1.FileKeySelector volumeName:n path:n key:n optional:p
core.v1.FlexPersistentVolumeSource driver:n
core.v1.FlexVolumeSource driver:n
core.v1.GCEPersistentDiskVolumeSource pdName:n
core.v1.GRPCAction port:n service:N
core.v1.GitRepoVolumeSource repository:n
core.v1.GlusterfsPersistentVolumeSource endpoints:n path:n endpointsNamespace:p
core.v1.GlusterfsVolumeSource endpoints:n path:n
core.v1.HTTPHeader name:n value:n
core.v1.HostAlias ip:n
core.v1.HostIP ip:n
core.v1.HostPathVolumeSource path:n type:p
core.v1.ISCSIPersistentVolumeSource targetPortal:n iqn:n lun:n initiatorName:p
core.v1.ISCSIVolumeSource targetPortal:n iqn:n lun:n initiatorName:p
core.v1.KeyToPath key:n path:n mode:p
core.v1.Lifecycle stopSignal:p
core.v1.LimitRangeItem type:n
core.v1.LimitRangeList items:N
core.v1.LimitRangeSpec limits:N
core.v1.LinuxContainerUser uid:n gid:n
core.v1.LoadBalancerIngress ipMode:p
core.v1.LocalVolumeSource path:n fsType:p
core.v1.ModifyVolumeStatus status:n
core.v1.NFSVolumeSource server:n path:n
core.v1.NamespaceCondition type:n status:n
core.v1.NamespaceList items:N
core.v1.NodeAddress type:n address:n
core.v1.NodeAllocatableResourceClaimStatus resourceClaimName:n resources:N
core.v1.NodeCondition type:n status:n
core.v1.NodeFeatures supplementalGroupsPolicy:p
core.v1.NodeList items:N
core.v1.NodeRuntimeHandler name:n
core.v1.NodeRuntimeHandlerFeatures recursiveReadOnlyMounts:p userNamespaces:p
core.v1.NodeSelector nodeSelectorTerms:N
core.v1.NodeSelectorRequirement key:n operator:n
core.v1.NodeSwapStatus capacity:p
core.v1.NodeSystemInfo machineID:n systemUUID:n bootID:n kernelVersion:n osImage:n containerRuntimeVersion:n kubeletVersion:n kubeProxyVersion:n operatingSystem:n architecture:n
core.v1.ObjectFieldSelector fieldPath:n
core.v1.PersistentVolumeClaimCondition type:n status:n
core.v1.PersistentVolumeClaimList items:N
core.v1.PersistentVolumeClaimSpec storageClassName:p volumeMode:p volumeAttributesClassName:p
core.v1.PersistentVolumeClaimStatus currentVolumeAttributesClassName:p
core.v1.PersistentVolumeClaimVolumeSource claimName:n
core.v1.PersistentVolumeList items:N
core.v1.PersistentVolumeSpec volumeMode:p volumeAttributesClassName:p
core.v1.PhotonPersistentDiskVolumeSource pdID:n
core.v1.PodAffinityTerm topologyKey:n
core.v1.PodCertificateProjection maxExpirationSeconds:p
core.v1.PodCondition type:n status:n
core.v1.PodDNSConfigOption value:p
core.v1.PodExecOptions command:N
core.v1.PodExtendedResourceClaimStatus requestMappings:N resourceClaimName:n
core.v1.PodIP ip:n
core.v1.PodList items:N
core.v1.PodLogOptions sinceSeconds:p tailLines:p limitBytes:p stream:p
core.v1.PodOS name:n
core.v1.PodReadinessGate conditionType:n
core.v1.PodResourceClaim name:n resourceClaimName:p resourceClaimTemplateName:p
core.v1.PodResourceClaimStatus name:n resourceClaimName:p
core.v1.PodSchedulingGate name:n
core.v1.PodSchedulingGroup podGroupName:p
core.v1.PodSecurityContext runAsUser:p runAsGroup:p runAsNonRoot:p supplementalGroupsPolicy:p fsGroup:p fsGroupChangePolicy:p seLinuxChangePolicy:p
core.v1.PodSpec containers:N terminationGracePeriodSeconds:p activeDeadlineSeconds:p automountServiceAccountToken:p shareProcessNamespace:p priority:p runtimeClassName:p enableServiceLinks:p preemptionPolicy:p setHostnameAsFQDN:p hostUsers:p hostnameOverride:p
core.v1.PodTemplateList items:N
core.v1.PortStatus port:n protocol:n error:p
core.v1.PortworxVolumeSource volumeID:n
core.v1.Preconditions uid:p
core.v1.PreferredSchedulingTerm weight:n
core.v1.Probe terminationGracePeriodSeconds:p
core.v1.ProjectedVolumeSource sources:N defaultMode:p
core.v1.QuobyteVolumeSource registry:n volume:n
core.v1.RBDPersistentVolumeSource monitors:N image:n
core.v1.RBDVolumeSource monitors:N image:n
core.v1.RangeAllocation range:n data:N
core.v1.ReplicationControllerCondition type:n status:n
core.v1.ReplicationControllerList items:N
core.v1.ReplicationControllerSpec replicas:p
core.v1.ReplicationControllerStatus replicas:n
core.v1.ResourceClaim name:n
core.v1.ResourceFieldSelector resource:n
core.v1.ResourceHealth resourceID:n message:p
core.v1.ResourceQuotaList items:N
core.v1.ResourceStatus name:n
core.v1.ScaleIOPersistentVolumeSource gateway:n system:n secretRef:N
core.v1.ScaleIOVolumeSource gateway:n system:n secretRef:N
core.v1.ScopedResourceSelectorRequirement scopeName:n operator:n
core.v1.SeccompProfile type:n localhostProfile:p
core.v1.Secret immutable:p
core.v1.SecretEnvSource optional:p
core.v1.SecretKeySelector key:n optional:p
core.v1.SecretList items:N
core.v1.SecretProjection optional:p
core.v1.SecretVolumeSource defaultMode:p optional:p
core.v1.SecurityContext privileged:p runAsUser:p runAsGroup:p runAsNonRoot:p readOnlyRootFilesystem:p allowPrivilegeEscalation:p procMount:p
core.v1.ServiceAccount automountServiceAccountToken:p
core.v1.ServiceAccountList items:N
core.v1.ServiceAccountTokenProjection expirationSeconds:p path:n
core.v1.ServiceList items:N
core.v1.ServicePort appProtocol:p port:n
core.v1.ServiceSpec ipFamilyPolicy:p allocateLoadBalancerNodePorts:p loadBalancerClass:p internalTrafficPolicy:p trafficDistribution:p
core.v1.SleepAction seconds:n
core.v1.Sysctl name:n value:n
core.v1.Taint key:n effect:n
core.v1.Toleration tolerationSeconds:p
core.v1.TopologySelectorLabelRequirement key:n values:N
core.v1.TopologySpreadConstraint maxSkew:n topologyKey:n whenUnsatisfiable:n minDomains:p nodeAffinityPolicy:p nodeTaintsPolicy:p
core.v1.TypedLocalObjectReference apiGroup:N kind:n name:n
core.v1.TypedObjectReference apiGroup:N kind:n name:n namespace:p
core.v1.Volume name:n
core.v1.VolumeDevice name:n devicePath:n
core.v1.VolumeMount name:n recursiveReadOnly:p mountPath:n mountPropagation:p
core.v1.VolumeMountStatus name:n mountPath:n recursiveReadOnly:p
core.v1.VsphereVirtualDiskVolumeSource volumePath:n
core.v1.WeightedPodAffinityTerm weight:n
core.v1.WindowsSecurityContextOptions gmsaCredentialSpecName:p gmsaCredentialSpec:p runAsUserName:p hostProcess:p
discovery.v1.Endpoint addresses:N hostname:p nodeName:p zone:p
discovery.v1.EndpointConditions ready:p serving:p terminating:p
discovery.v1.EndpointPort name:p port:p appProtocol:p
discovery.v1.EndpointSlice addressType:n endpoints:N ports:N
discovery.v1.EndpointSliceList items:N
discovery.v1.ForNode name:n
discovery.v1.ForZone name:n
events.v1.EventList items:N
events.v1.EventSeries count:n
meta.v1.APIGroup name:n versions:N
meta.v1.APIGroupList groups:N
meta.v1.APIResource name:n singularName:n namespaced:n kind:n
meta.v1.APIResourceList groupVersion:n resources:N
meta.v1.APIVersions versions:N serverAddressByClientCIDRs:N
meta.v1.ApplyOptions force:n fieldManager:n
meta.v1.Condition type:n status:n reason:n message:n
meta.v1.DeleteOptions gracePeriodSeconds:p orphanDependents:p propagationPolicy:p ignoreStoreReadErrorWithClusterBreakingPotential:p
meta.v1.FieldSelectorRequirement key:n operator:n
meta.v1.GroupVersionForDiscovery groupVersion:n version:n
meta.v1.LabelSelectorRequirement key:n operator:n
meta.v1.List items:N
meta.v1.ListMeta remainingItemCount:p
meta.v1.ListOptions timeoutSeconds:p sendInitialEvents:p
meta.v1.ObjectMeta deletionGracePeriodSeconds:p
meta.v1.OwnerReference apiVersion:n kind:n name:n uid:n controller:p blockOwnerDeletion:p
meta.v1.PartialObjectMetadataList items:N
meta.v1.PatchOptions force:p
meta.v1.Preconditions uid:p resourceVersion:p
meta.v1.RootPaths paths:N
meta.v1.ServerAddressByClientCIDR clientCIDR:n serverAddress:n
meta.v1.ShardInfo selector:n
meta.v1.Table columnDefinitions:N rows:N
meta.v1.TableColumnDefinition name:n type:n format:n description:n priority:n
meta.v1.TableRowCondition type:n status:n
meta.v1.WatchEvent type:n
networking.v1.HTTPIngressPath pathType:N
networking.v1.HTTPIngressRuleValue paths:N
networking.v1.IPAddressList items:N
networking.v1.IPBlock cidr:n
networking.v1.IngressClassList items:N
networking.v1.IngressClassParametersReference apiGroup:p kind:n name:n scope:N namespace:p
networking.v1.IngressList items:N
networking.v1.IngressPortStatus port:n error:p
networking.v1.IngressServiceBackend name:n
networking.v1.IngressSpec ingressClassName:p
networking.v1.NetworkPolicyList items:N
networking.v1.NetworkPolicyPort endPort:p
networking.v1.ServiceCIDRList items:N
node.v1.RuntimeClass handler:n
node.v1.RuntimeClassList items:N
policy.v1.PodDisruptionBudgetList items:N
policy.v1.PodDisruptionBudgetSpec unhealthyPodEvictionPolicy:p
policy.v1.PodDisruptionBudgetStatus disruptionsAllowed:n currentHealthy:n desiredHealthy:n expectedPods:n
rbac.v1.ClusterRole rules:N
rbac.v1.ClusterRoleBindingList items:N
rbac.v1.ClusterRoleList items:N
rbac.v1.PolicyRule verbs:N
rbac.v1.Role rules:N
rbac.v1.RoleBindingList items:N
rbac.v1.RoleList items:N
rbac.v1.RoleRef apiGroup:n kind:n name:n
rbac.v1.Subject kind:n name:n
scheduling.v1.PriorityClass value:n
scheduling.v1.PriorityClassList items:N
storage.v1.CSIDriverList items:N
storage.v1.CSIDriverSpec attachRequired:p podInfoOnMount:p storageCapacity:p fsGroupPolicy:p requiresRepublish:p seLinuxMount:p nodeAllocatableUpdatePeriodSeconds:p serviceAccountTokenInSecrets:p preventPodSchedulingIfMissing:p
storage.v1.CSINodeDriver name:n nodeID:n topologyKeys:N
storage.v1.CSINodeList items:N
storage.v1.CSINodeSpec drivers:N
storage.v1.CSIStorageCapacity storageClassName:n
storage.v1.CSIStorageCapacityList items:N
storage.v1.StorageClass provisioner:n allowVolumeExpansion:p volumeBindingMode:p
storage.v1.StorageClassList items:N
storage.v1.TokenRequest audience:n expirationSeconds:p
storage.v1.VolumeAttachmentList items:N
storage.v1.VolumeAttachmentSource persistentVolumeName:p
storage.v1.VolumeAttachmentSpec attacher:n nodeName:n
storage.v1.VolumeAttachmentStatus attached:n
storage.v1.VolumeAttributesClass driverName:n
storage.v1.VolumeAttributesClassList items:N
storage.v1.VolumeError errorCode:p
storage.v1.VolumeNodeResources count:p
"""
)
