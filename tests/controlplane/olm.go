package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// olmConfig says where OLM's binaries are and which namespace is OLM's global catalog
// namespace (catalog-operator's --namespace; openshift-marketplace on OpenShift), whose
// CatalogSources serve every namespace.
type olmConfig struct {
	tools, kwok, globalCatalogs string
}

const (
	// olm-operator's own namespace.
	olmNamespace = "olm"
	// kwok simulates the nodes whose names carry this annotation.
	kwokNodeAnnotation = "kwok.x-k8s.io/node"
)

// startOLM runs what a cluster with OLM runs besides the control plane: kube-scheduler, nodes
// simulated by kwok (Pods become Running and Ready without a kubelet), and OLM's olm-operator
// and catalog-operator, built from their Go modules. OLM's operators are
// supervised: olm-operator exits on purpose after it has labelled existing objects and
// expects its Pod to be restarted.
func startOLM(ctx context.Context, dir string, p *pki, c *adminClients, olm olmConfig) (<-chan error, error) {
	for _, ns := range []string{olmNamespace, olm.globalCatalogs} {
		_, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("namespace %s: %w", ns, err)
		}
	}
	if err := createKwokNode(ctx, c, "kwok-node-0"); err != nil {
		return nil, err
	}
	failed := make(chan error, 4)
	scheduler, err := startChild(ctx, dir, "kube-scheduler", []string{
		"--kubeconfig=" + p.adminKubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--v=1",
	})
	if err != nil {
		return nil, err
	}
	go func() {
		err := <-scheduler.exited
		failed <- fmt.Errorf("kube-scheduler exited: %v", err)
	}()
	go func() {
		<-ctx.Done()
		scheduler.stop()
	}()

	env := []string{"KUBECONFIG=" + p.adminKubeconfig}
	// Both OLM operators serve health and metrics on :8443 with a certificate (on :8080, the
	// webhook admin port's default, without one); the second to start logs that the port is
	// taken and goes on, as both do in a cluster's shared network namespace.
	tls := []string{"--tls-cert=" + p.servingCert, "--tls-key=" + p.servingKey, "--client-ca=" + p.caFile}
	supervise(ctx, dir, "kwok", olm.kwok, env, []string{
		"--kubeconfig=" + p.adminKubeconfig,
		"--manage-nodes-with-annotation-selector=" + kwokNodeAnnotation + "=fake",
		// Renew the node's Lease as a kubelet does: without one, the node lifecycle controller
		// finds the node's heartbeat late, marks it NotReady and its Pods not Ready.
		"--node-lease-duration-seconds=40",
		"--cidr=10.244.0.1/16",
		"--node-ip=127.0.0.1",
	})
	supervise(ctx, dir, "olm-operator", filepath.Join(olm.tools, "olm"), env, append([]string{
		"--namespace=" + olmNamespace,
		"--writeStatusName=",
		"--writePackageServerStatusName=",
		"--interval=1m",
	}, tls...))
	supervise(ctx, dir, "catalog-operator", filepath.Join(olm.tools, "catalog"), env, append([]string{
		"--kubeconfig=" + p.adminKubeconfig,
		"--namespace=" + olm.globalCatalogs,
		"--writeStatusName=",
		"--interval=1m",
	}, tls...))
	return failed, nil
}

// createKwokNode registers a node for kwok to simulate: Ready, with room for every test Pod.
func createKwokNode(ctx context.Context, c *adminClients, name string) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("1000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{kwokNodeAnnotation: "fake"},
			Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
		},
	}
	_, err := c.kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	// A patch, not an update: the node lifecycle controller may have changed the node already.
	status, err := json.Marshal(map[string]any{"status": map[string]any{"capacity": capacity, "allocatable": capacity}})
	if err != nil {
		return err
	}
	_, err = c.kube.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, status, metav1.PatchOptions{}, "status")
	return err
}

// supervise runs binary until ctx ends, restarting it a second after each exit, as a Pod's
// restartPolicy Always does. It appends to DIR/<name>.log and dies with this process.
func supervise(ctx context.Context, dir, name, binary string, env, args []string) {
	go func() {
		for restarts := 0; ctx.Err() == nil; restarts++ {
			logFile, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
			if err != nil {
				log.Printf("%s: %v", name, err)
				return
			}
			cmd := exec.Command(binary, args...)
			cmd.Stdout, cmd.Stderr = logFile, logFile
			// OLM's operators refuse unlabelled writes by panicking when CI is set (a check
			// for their own test suites): run them as a cluster does, without it.
			cmd.Env = append(withoutVar(os.Environ(), "CI"), env...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				log.Printf("%s: start: %v", name, err)
				_ = logFile.Close()
				return
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
				log.Printf("%s exited (%v); restart %d", name, err, restarts+1)
			case <-ctx.Done():
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					_ = cmd.Process.Kill()
					<-done
				}
			}
			_ = logFile.Close()
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

func withoutVar(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}
