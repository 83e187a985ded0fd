// Command fjord-k8s is one multi-call binary holding the upstream Kubernetes
// components and etcd, built by `cargo xtask tools` from the pinned
// k8s.io/kubernetes module. Linking one binary instead of seven saves most of
// the link time and disk: the components share nearly all of their code.
//
// The component is chosen by the name the binary is called by (the cache holds
// one symlink per component), or by the first argument:
//
//	kube-apiserver --help
//	fjord-k8s kube-apiserver --help
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	_ "time/tzdata" // CronJob time-zone support, as upstream's kube-apiserver and kube-controller-manager do

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as upstream's mains register it
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream's mains register them
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream's mains register it
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"

	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl's auth plugins, as upstream's kubectl registers them
)

// components maps a component name to its upstream entry point; each mirrors
// the component's own cmd/<name>/main.go.
var components = map[string]func(args []string) int{
	"kube-apiserver":          func([]string) int { return cli.Run(apiserver.NewAPIServerCommand()) },
	"kube-controller-manager": func([]string) int { return cli.Run(controllermanager.NewControllerManagerCommand()) },
	"kube-scheduler":          func([]string) int { return cli.Run(scheduler.NewSchedulerCommand()) },
	"kubelet":                 func([]string) int { return cli.Run(kubelet.NewKubeletCommand(context.Background())) },
	"kube-proxy":              func([]string) int { return cli.Run(proxy.NewProxyCommand()) },
	"kubectl":                 runKubectl,
	"etcd": func(args []string) int {
		etcdmain.Main(args)
		return 0
	},
}

func runKubectl(args []string) int {
	logs.GlogSetter(kubectlcmd.GetLogVerbosity(args)) // nolint:errcheck
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
	return 0
}

func main() {
	name := filepath.Base(os.Args[0])
	run, ok := components[name]
	if !ok && len(os.Args) > 1 {
		// Called as `fjord-k8s <component> ...`: drop our own name so the
		// component sees the argv it expects (cobra reads os.Args[1:]).
		name = os.Args[1]
		run, ok = components[name]
		os.Args = append([]string{name}, os.Args[2:]...)
	}
	if !ok {
		names := make([]string, 0, len(components))
		for n := range components {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: fjord-k8s <component> [args...]\ncomponents: %v\n", names)
		os.Exit(2)
	}
	os.Exit(run(os.Args))
}
