// Command controlplane runs a real, minimal Kubernetes control plane on loopback for the
// olm-pullsecret-injector end-to-end tests and its `dev` command: embedded etcd, kube-apiserver
// and kube-controller-manager (each component in its own process, because both register
// process-wide state), plus OLM's CRDs. With --olm-tools it also runs kube-scheduler, a node
// simulated by kwok and OLM itself (olm-operator, catalog-operator) from the binaries in DIR.
//
//	controlplane --dir DIR [--olm-tools DIR --kwok BINARY [--global-catalog-namespace NS]] [--exit-on-stdin-close]
//
// When ready it writes DIR/kubeconfig (cluster admin), DIR/ca.crt and, last, DIR/ready.
// SIGTERM or SIGINT (or stdin closing, with --exit-on-stdin-close) shuts everything down.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "kube-apiserver":
			runComponent(apiserver.NewAPIServerCommand(), os.Args[2:])
			return
		case "kube-controller-manager":
			runComponent(controllermanager.NewControllerManagerCommand(), os.Args[2:])
			return
		case "kube-scheduler":
			runComponent(scheduler.NewSchedulerCommand(), os.Args[2:])
			return
		}
	}

	dir := flag.String("dir", "", "directory for state, certificates and the admin kubeconfig (required)")
	olmTools := flag.String("olm-tools", "", "directory with OLM's olm and catalog binaries: run OLM, kube-scheduler and a kwok node")
	kwok := flag.String("kwok", "", "the kwok binary (with --olm-tools)")
	globalCatalogs := flag.String("global-catalog-namespace", "openshift-marketplace", "OLM's global catalog namespace (with --olm-tools)")
	exitOnStdinClose := flag.Bool("exit-on-stdin-close", false, "shut down when stdin reaches EOF (the parent process died)")
	flag.Parse()
	if *dir == "" {
		log.Fatal("--dir is required")
	}
	if err := run(*dir, olmConfig{tools: *olmTools, kwok: *kwok, globalCatalogs: *globalCatalogs}, *exitOnStdinClose); err != nil {
		log.Fatalf("controlplane: %v", err)
	}
}

// runComponent runs one upstream component command in this (child) process.
func runComponent(cmd *cobra.Command, args []string) {
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}

func run(dir string, olm olmConfig, exitOnStdinClose bool) error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	if exitOnStdinClose {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			log.Print("stdin closed, shutting down")
			cancel()
		}()
	}

	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dir, "ready"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	started := time.Now()

	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]

	pki, err := writePKI(dir)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}

	etcd, err := startEtcd(filepath.Join(dir, "etcd"), etcdClient, etcdPeer)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()
	log.Printf("etcd ready on 127.0.0.1:%d after %s", etcdClient, time.Since(started).Round(time.Millisecond))

	apiURL := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	if err := writeKubeconfig(pki.adminKubeconfig, apiURL, pki.caFile, pki.adminCert, pki.adminKey); err != nil {
		return err
	}
	if err := writeKubeconfig(pki.controllerManagerKubeconfig, apiURL, pki.caFile, pki.cmCert, pki.cmKey); err != nil {
		return err
	}

	apiserverProc, err := startChild(ctx, dir, "kube-apiserver", apiserverArgs(pki, etcdClient, apiPort))
	if err != nil {
		return err
	}
	defer apiserverProc.stop()

	admin, err := newAdminClients(pki.adminKubeconfig)
	if err != nil {
		return err
	}
	if err := waitAPIServerReady(ctx, admin, apiserverProc); err != nil {
		return err
	}
	log.Printf("kube-apiserver ready on %s after %s", apiURL, time.Since(started).Round(time.Millisecond))

	cmProc, err := startChild(ctx, dir, "kube-controller-manager", controllerManagerArgs(pki))
	if err != nil {
		return err
	}
	defer cmProc.stop()

	if err := installOLMCRDs(ctx, admin); err != nil {
		return fmt.Errorf("OLM CRDs: %w", err)
	}
	if err := waitDefaultServiceAccount(ctx, admin, cmProc); err != nil {
		return err
	}
	log.Printf("kube-controller-manager running, OLM CRDs established after %s", time.Since(started).Round(time.Millisecond))

	olmFailed := make(<-chan error)
	if olm.tools != "" {
		if olmFailed, err = startOLM(ctx, dir, pki, admin, olm); err != nil {
			return fmt.Errorf("OLM: %w", err)
		}
		if err := waitNodeReady(ctx, admin, "kwok-node-0"); err != nil {
			return err
		}
		log.Printf("kube-scheduler, kwok and OLM running after %s", time.Since(started).Round(time.Millisecond))
	}

	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(apiURL+"\n"), 0o600); err != nil {
		return err
	}
	log.Printf("control plane ready in %s; kubeconfig: %s", time.Since(started).Round(time.Millisecond), pki.adminKubeconfig)

	select {
	case <-ctx.Done():
	case err := <-apiserverProc.exited:
		return fmt.Errorf("kube-apiserver exited: %v", err)
	case err := <-cmProc.exited:
		return fmt.Errorf("kube-controller-manager exited: %v", err)
	case err := <-olmFailed:
		return err
	}
	log.Print("shutting down")
	_ = os.Remove(filepath.Join(dir, "ready"))
	return nil
}

// freePorts asks the kernel for n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

type child struct {
	name   string
	cmd    *exec.Cmd
	exited chan error
}

// startChild re-executes this binary as one control-plane component. The child dies with us
// (Pdeathsig) and logs to DIR/<name>.log.
func startChild(ctx context.Context, dir, name string, args []string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, exited: make(chan error, 1)}
	go func() {
		err := cmd.Wait()
		_ = logFile.Close()
		c.exited <- err
		close(c.exited)
	}()
	return c, nil
}

// stop asks the component to terminate and kills it if it has not within 10 seconds.
func (c *child) stop() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

func apiserverArgs(p *pki, etcdPort, apiPort int) []string {
	return []string{
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(etcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + filepath.Join(p.dir, "apiserver-certs"),
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caFile,
		"--service-account-key-file=" + p.saKey,
		"--service-account-signing-key-file=" + p.saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC",
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		// /debug/pprof (cluster-admin only): the pod_create bench profiles the API server.
		"--profiling=true",
		"--v=1",
	}
}

func controllerManagerArgs(p *pki) []string {
	return []string{
		"--kubeconfig=" + p.controllerManagerKubeconfig,
		"--controllers=deployment-controller,replicaset-controller,serviceaccount-controller,serviceaccount-token-controller,namespace-controller,garbage-collector-controller,job-controller,statefulset-controller,daemonset-controller,clusterrole-aggregation-controller,disruption-controller,node-lifecycle-controller",
		"--service-account-private-key-file=" + p.saKey,
		"--root-ca-file=" + p.caFile,
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--secure-port=0",
		"--concurrent-deployment-syncs=10",
		"--concurrent-replicaset-syncs=10",
		"--v=1",
	}
}
