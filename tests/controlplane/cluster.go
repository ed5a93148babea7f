package main

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/operator-framework/api/crds"
	"go.etcd.io/etcd/server/v3/embed"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func startEtcd(dataDir string, clientPort, peerPort int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "controlplane"
	cfg.Dir = dataDir
	cfg.LogLevel = "error"
	clientURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(clientPort)}
	peerURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(peerPort)}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	// Test data is disposable: trade durability for speed.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcd not ready after 60s")
	}
}

type adminClients struct {
	kube    *kubernetes.Clientset
	ext     *apiextensions.Clientset
	dynamic dynamic.Interface
}

func newAdminClients(kubeconfig string) (*adminClients, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ext, err := apiextensions.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &adminClients{kube: kube, ext: ext, dynamic: dyn}, nil
}

// poll calls check every 200ms until it returns true, the context ends, the component
// exits, or two minutes pass.
func poll(ctx context.Context, what string, component *child, check func(context.Context) (bool, error)) error {
	deadline := time.After(2 * time.Minute)
	var lastErr error
	var exited <-chan error // none for a check of no component
	if component != nil {
		exited = component.exited
	}
	for {
		ok, err := check(ctx)
		if ok {
			return nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			return fmt.Errorf("%s exited while waiting for %s: %v (see %s.log)", component.name, what, err, component.name)
		case <-deadline:
			return fmt.Errorf("timed out waiting for %s: %v", what, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitAPIServerReady(ctx context.Context, c *adminClients, apiserver *child) error {
	return poll(ctx, "kube-apiserver /readyz", apiserver, func(ctx context.Context) (bool, error) {
		body, err := c.kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", err
	})
}

// waitDefaultServiceAccount proves the controller-manager works: the serviceaccount
// controller gives every namespace its "default" service account.
func waitDefaultServiceAccount(ctx context.Context, c *adminClients, cm *child) error {
	return poll(ctx, "the default service account", cm, func(ctx context.Context) (bool, error) {
		_, err := c.kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	})
}

// waitNodeReady waits until kwok reports the node Ready (the scheduler places Pods on it).
func waitNodeReady(ctx context.Context, c *adminClients, name string) error {
	return poll(ctx, "node "+name+" Ready (kwok)", nil, func(ctx context.Context) (bool, error) {
		node, err := c.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == "Ready" && cond.Status == "True" {
				return true, nil
			}
		}
		return false, nil
	})
}

// installOLMCRDs installs OLM's own CustomResourceDefinitions, as shipped by
// github.com/operator-framework/api, and waits until they are established.
func installOLMCRDs(ctx context.Context, c *adminClients) error {
	defs := []*apiextensionsv1.CustomResourceDefinition{
		crds.CatalogSource(), crds.Subscription(), crds.ClusterServiceVersion(),
		crds.OperatorGroup(), crds.InstallPlan(), crds.OperatorCondition(), crds.Operator(), crds.OLMConfig(),
	}
	for _, crd := range defs {
		_, err := c.ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s: %w", crd.Name, err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for _, crd := range defs {
		for {
			got, err := c.ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err == nil && established(got) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not established: %v", crd.Name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Established is not yet servable: the storage of a new CRD answers 429 "storage is
		// (re)initializing" for a moment. Ready means every served version lists.
		for _, version := range crd.Spec.Versions {
			if !version.Served {
				continue
			}
			gvr := schema.GroupVersionResource{Group: crd.Spec.Group, Version: version.Name, Resource: crd.Spec.Names.Plural}
			for {
				_, err := c.dynamic.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s not servable: %v", gvr, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	return nil
}

func established(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, cond := range crd.Status.Conditions {
		if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}
