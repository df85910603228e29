// Package kube feeds `moe gateway --kubernetes` its replicas from the cluster: the engine
// Services the operator creates (annotated with the model name they serve) and their
// EndpointSlices (which carry the Services' labels), both watched through informers, so a replica joins when it turns ready
// and leaves as soon as it stops being ready or starts terminating.
package kube

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/moe-operator/moe-operator/gateway"
)

// AnnotationServedModelName is the engine Service annotation that names the model it
// serves, as the operator sets it (api/v1alpha1's constant of the same name; a test in
// controllers holds them equal). The gateway reads it by value: it imports nothing of the
// operator.
const AnnotationServedModelName = "serving.moe-operator.io/served-model-name"

// portName is the engine Service's and EndpointSlices' port name.
const portName = "http"

// engineServices selects the operator's engine Services.
var engineServices = labels.SelectorFromSet(labels.Set{
	"app.kubernetes.io/managed-by": "moe-operator",
	"app.kubernetes.io/component":  "engine",
})

// Watch keeps router's replicas equal to the ready endpoints of the engine Services in
// namespace ("" for every namespace) until ctx ends. It returns once the caches have
// synced and the first set is in place. The Cluster it returns wakes MixtralDeployments
// through dyn.
func Watch(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, namespace string, router *gateway.Router, log *slog.Logger) (*Cluster, error) {
	services := informers.NewSharedInformerFactoryWithOptions(cs, 10*time.Minute, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = engineServices.String() }))
	// The EndpointSlice controller copies a Service's labels onto its slices, so the same
	// selector keeps the watch to the engines' slices.
	slices := informers.NewSharedInformerFactoryWithOptions(cs, 10*time.Minute, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = engineServices.String() }))
	svcInformer := services.Core().V1().Services()
	sliceInformer := slices.Discovery().V1().EndpointSlices()

	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	if _, err := svcInformer.Informer().AddEventHandler(handler); err != nil {
		return nil, err
	}
	if _, err := sliceInformer.Informer().AddEventHandler(handler); err != nil {
		return nil, err
	}
	services.Start(ctx.Done())
	slices.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), svcInformer.Informer().HasSynced, sliceInformer.Informer().HasSynced) {
		return nil, fmt.Errorf("the Service and EndpointSlice caches did not sync")
	}
	apply := func() {
		svcs, _ := svcInformer.Lister().List(labels.Everything())
		eps, _ := sliceInformer.Lister().List(labels.Everything())
		replicas, models := Replicas(svcs, eps)
		router.Set(replicas, models...)
		log.Info("replicas", "models", len(router.Models()), "replicas", len(replicas))
	}
	apply()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				apply()
			}
		}
	}()
	return &Cluster{services: svcInformer.Lister(), dyn: dyn}, nil
}

// Replicas are the ready endpoints of the annotated Services, one replica per address, at
// the port named "http", and the models those Services serve (with or without a ready
// endpoint). Terminating endpoints are left out, so a draining pod takes no new request.
func Replicas(services []*corev1.Service, slices []*discoveryv1.EndpointSlice) ([]*gateway.Replica, []string) {
	models := map[string]string{} // namespace/name -> model
	for _, s := range services {
		if m := s.Annotations[AnnotationServedModelName]; m != "" {
			models[s.Namespace+"/"+s.Name] = m
		}
	}
	seen := map[string]bool{}
	var out []*gateway.Replica
	for _, es := range slices {
		model, ok := models[es.Namespace+"/"+es.Labels[discoveryv1.LabelServiceName]]
		if !ok || es.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		port := int32(0)
		for _, p := range es.Ports {
			if p.Name != nil && *p.Name == portName && p.Port != nil {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			c := ep.Conditions
			if (c.Ready != nil && !*c.Ready) || (c.Terminating != nil && *c.Terminating) {
				continue
			}
			for _, addr := range ep.Addresses {
				u := &url.URL{Scheme: "http", Host: net.JoinHostPort(addr, strconv.Itoa(int(port)))}
				if key := model + "=" + u.String(); !seen[key] {
					seen[key] = true
					out = append(out, &gateway.Replica{Model: model, URL: u})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Model != out[j].Model {
			return out[i].Model < out[j].Model
		}
		return out[i].URL.String() < out[j].URL.String()
	})
	var names []string
	for _, m := range models {
		names = append(names, m)
	}
	sort.Strings(names)
	return out, names
}
