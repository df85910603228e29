package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moe-operator/moe-operator/engine/gpu"
	"github.com/moe-operator/moe-operator/engine/gpu/vk"
	"github.com/moe-operator/moe-operator/engine/model"
)

func init() { rootCmd.AddCommand(newDevicesCmd()) }

func newDevicesCmd() *cobra.Command {
	var (
		asJSON    bool
		bandwidth string
	)
	cmd := &cobra.Command{
		Use:   "devices",
		Short: "List the Vulkan devices the engine can run on, with memory and features",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if bandwidth != "" {
				index, err := gpu.Select(bandwidth)
				if err != nil {
					return err
				}
				d, err := gpu.Open(index, true, gpu.Options{})
				if err != nil {
					return err
				}
				defer d.Close()
				bw, err := d.Bandwidth(1 << 30)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: memory bandwidth %.1f GB/s (buffer copies, read + write)\n", d.Info.Name, bw/1e9)
				return nil
			}
			devs, err := gpu.Devices()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(devs)
			}
			if len(devs) == 0 {
				fmt.Fprintln(out, "no Vulkan devices (the loader found no driver)")
				return nil
			}
			for _, d := range devs {
				fmt.Fprintf(out, "vulkan:%d  %s (%s, Vulkan %s)\n", d.Index, d.Name, d.Type, d.API)
				fmt.Fprintf(out, "  memory %.1f GiB (budget %.1f GiB), largest binding %d MiB, subgroup %d\n",
					float64(d.Memory)/(1<<30), float64(d.Budget)/(1<<30), d.MaxRange>>20, d.Subgroup)
				fmt.Fprintf(out, "  features: %s\n", strings.Join(d.Features, ", "))
				switch {
				case len(d.Missing) > 0:
					fmt.Fprintf(out, "  unusable: lacks %s\n", strings.Join(d.Missing, ", "))
				case d.CPU:
					fmt.Fprintln(out, "  a software device: --device vulkan:N uses it, --device auto does not")
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&bandwidth, "bandwidth", "", "measure this device's memory bandwidth instead (vulkan or vulkan:N)")
	return cmd
}

// deviceFactory resolves --device: nil for the CPU. auto takes the best
// GPU (or, with --tensor-parallel N, a group of N GPUs) and falls back to
// the CPU, saying why, when there is none; vulkan and vulkan:N insist.
func (e *engineFlags) deviceFactory() (model.AcceleratorFactory, error) {
	opts := gpu.Options{Log: func(s string) { fmt.Fprintln(os.Stderr, "moe:", s) }}
	n := max(e.tensorParallel, 1)
	switch spec := strings.ToLower(e.device); spec {
	case "cpu":
		return nil, nil
	case "auto", "":
		devs, err := gpu.Devices()
		if err != nil {
			if errors.Is(err, vk.ErrNoLoader) {
				fmt.Fprintf(os.Stderr, "moe: --device auto: running on the CPU: %v\n", err)
			} else {
				fmt.Fprintf(os.Stderr, "moe: --device auto: running on the CPU: Vulkan failed: %v\n", err)
			}
			return nil, nil
		}
		gpus := usable(devs, false)
		switch {
		case len(gpus) == 0:
			fmt.Fprintf(os.Stderr, "moe: --device auto: running on the CPU: no GPU among %d Vulkan device(s) (`moe devices` lists them)\n", len(devs))
			return nil, nil
		case n == 1:
			return gpu.Factory(-1, false, opts), nil
		case len(gpus) < n:
			fmt.Fprintf(os.Stderr, "moe: --device auto: running on the CPU: --tensor-parallel %d needs %d GPUs, found %d\n", n, n, len(gpus))
			return nil, nil
		}
		return gpu.GroupFactory(gpus[:n], false, opts), nil
	case "vulkan":
		if n == 1 {
			return gpu.Factory(-1, true, opts), nil
		}
		devs, err := gpu.Devices()
		if err != nil {
			return nil, err
		}
		indexes, err := groupDevices(devs, n)
		if err != nil {
			return nil, err
		}
		return gpu.GroupFactory(indexes, true, opts), nil
	default:
		index, err := gpu.Select(spec)
		if err != nil {
			return nil, err
		}
		if n > 1 {
			// One device opened n times: a test of the group's path, not a speed-up.
			return gpu.GroupFactory(slices.Repeat([]int{index}, n), true, opts), nil
		}
		return gpu.Factory(index, true, opts), nil
	}
}

// usable lists the devices the backend can run on, software ones (lavapipe)
// only with software true.
func usable(devs []gpu.Info, software bool) []int {
	var out []int
	for _, d := range devs {
		if len(d.Missing) == 0 && (software || !d.CPU) {
			out = append(out, d.Index)
		}
	}
	return out
}

// groupDevices picks the n devices of --device vulkan --tensor-parallel n:
// n GPUs, or, where the only device is a software one (lavapipe, in tests
// and CI), that device n times.
func groupDevices(devs []gpu.Info, n int) ([]int, error) {
	if gpus := usable(devs, false); len(gpus) >= n {
		return gpus[:n], nil
	} else if len(gpus) > 0 {
		return nil, fmt.Errorf("--device vulkan --tensor-parallel %d needs %d GPUs, found %d (`moe devices` lists them)", n, n, len(gpus))
	}
	if sw := usable(devs, true); len(sw) > 0 {
		fmt.Fprintf(os.Stderr, "moe: --tensor-parallel %d: no GPU, so the software device vulkan:%d is opened %d times\n", n, sw[0], n)
		return slices.Repeat(sw[:1], n), nil
	}
	return nil, fmt.Errorf("--device vulkan: no usable Vulkan device among %d (`moe devices` lists them)", len(devs))
}
