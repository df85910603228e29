// Package gpu runs the engine's forward pass on a GPU through Vulkan
// compute: pure Go (the loader is opened at run time with purego; no
// cgo), with SPIR-V shaders compiled from shaders/ and embedded. The same
// shaders run on NVIDIA, AMD and Intel GPUs and, through Mesa's lavapipe,
// on the CPU, which is how every test and CI run executes them.
//
// The package implements model.Accelerator; engine/model never imports it
// (cmd/ injects it through model.LoadOptions.Device).
package gpu

import (
	"embed"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/moe-operator/moe-operator/engine/gpu/vk"
)

//go:embed spv/*.spv
var spvFiles embed.FS

// ErrNoDevice means there is no usable Vulkan device.
var ErrNoDevice = errors.New("gpu: no usable Vulkan device")

// ErrDeviceMemory means the device has too little memory for a request.
var ErrDeviceMemory = errors.New("gpu: not enough device memory")

// Options tune how a device is opened.
type Options struct {
	// Validation enables VK_LAYER_KHRONOS_validation when installed; its
	// errors are collected (ValidationErrors) and logged.
	Validation bool
	// MemoryLimit caps the device memory the backend allocates (0: the
	// driver's budget for the device-local heap).
	MemoryLimit uint64
	// Log receives one line per notable event (nil: discarded).
	Log func(string)
	// Profile times every dispatch with timestamp queries
	// (Backend.Profile); it serialises nothing more than the barriers
	// already do, but reading the queries costs a little per Forward.
	Profile bool
}

// Info describes one physical device, as `moe devices` lists them.
type Info struct {
	Index    int
	Name     string
	Type     string
	API      string
	Memory   uint64 // the device-local heap
	Budget   uint64 // what this process may use of it
	MaxRange uint64 // the largest storage buffer binding
	Subgroup uint32
	Features []string
	Missing  []string // features the backend needs and the device lacks
	CPU      bool     // a software device (lavapipe)
}

// Devices lists the Vulkan devices.
func Devices() ([]Info, error) {
	if err := vk.Load(); err != nil {
		return nil, err
	}
	inst, err := vk.CreateInstance("moe devices", nil, nil)
	if err != nil {
		return nil, err
	}
	defer inst.Destroy()
	pds, err := inst.PhysicalDevices()
	if err != nil {
		return nil, err
	}
	var out []Info
	for i, pd := range pds {
		out = append(out, describe(i, pd.Info()))
	}
	return out, nil
}

func describe(i int, d *vk.DeviceInfo) Info {
	in := Info{Index: i, Name: d.Name, Type: d.TypeName(), Memory: d.DeviceLocalBytes, Budget: d.DeviceLocalBudget,
		MaxRange: d.MaxStorageBuffer, Subgroup: d.SubgroupSize, CPU: d.Type == vk.DeviceTypeCPU,
		API: fmt.Sprintf("%d.%d.%d", d.APIVersion>>22, (d.APIVersion>>12)&0x3ff, d.APIVersion&0xfff)}
	for _, f := range []struct {
		name string
		have bool
		need bool
	}{
		{"storageBuffer16BitAccess", d.StorageBuffer16Bit, true},
		{"storageBuffer8BitAccess", d.StorageBuffer8Bit, true},
		{"compute queue", d.ComputeQueueFamily >= 0, true},
		{"subgroup arithmetic", d.SubgroupArithmetic, true},
		{"shaderFloat16", d.ShaderFloat16, false},
		{"shaderInt8", d.ShaderInt8, false},
		{"integerDotProduct", d.IntegerDotProduct, false},
		{"cooperativeMatrix", d.CooperativeMatrix, false},
		{"timestamps", d.TimestampCompute, false},
	} {
		switch {
		case f.have:
			in.Features = append(in.Features, f.name)
		case f.need:
			in.Missing = append(in.Missing, f.name)
		}
	}
	return in
}

// Device is an opened Vulkan device with the backend's pipelines. Its
// methods serialise on one queue and command buffer.
type Device struct {
	mu        sync.Mutex
	opts      Options
	inst      vk.Instance
	messenger vk.DebugMessenger
	info      *vk.DeviceInfo
	Info      Info
	dev       vk.Device
	queue     vk.Queue
	cmdPool   vk.CommandPool
	cmd       vk.CommandBuffer
	fence     vk.Fence
	timers    vk.QueryPool
	setLayout vk.DescriptorSetLayout
	layout    vk.PipelineLayout
	pipelines map[string]vk.Pipeline
	pools     []vk.DescriptorPool
	poolLeft  int
	sets      map[setKey]vk.DescriptorSet
	dummy     *Buffer
	staging   *Buffer
	limit     uint64 // device memory the backend may allocate
	used      uint64
	validMu   sync.Mutex
	valid     []string // validation messages of error severity
}

// Select parses a device spec ("vulkan" or "vulkan:N") and returns the
// index to open, -1 for "the best device".
func Select(spec string) (int, error) {
	if spec == "vulkan" {
		return -1, nil
	}
	if rest, ok := strings.CutPrefix(spec, "vulkan:"); ok {
		var n int
		if _, err := fmt.Sscanf(rest, "%d", &n); err == nil && n >= 0 && fmt.Sprint(n) == rest {
			return n, nil
		}
	}
	return 0, fmt.Errorf("gpu: device %q: want vulkan or vulkan:N (N from `moe devices`)", spec)
}

// Open opens device index (-1: the best one: a discrete GPU before an
// integrated or virtual one, a software device last; with allowCPU false
// a software device is not chosen).
func Open(index int, allowCPU bool, opts Options) (*Device, error) {
	if err := vk.Load(); err != nil {
		return nil, err
	}
	var layers, exts []string
	if opts.Validation {
		if slices.Contains(vk.InstanceLayers(), "VK_LAYER_KHRONOS_validation") {
			layers = append(layers, "VK_LAYER_KHRONOS_validation")
		}
		if slices.Contains(vk.InstanceExtensions(), "VK_EXT_debug_utils") {
			exts = append(exts, "VK_EXT_debug_utils")
		}
	}
	inst, err := vk.CreateInstance("moe", layers, exts)
	if err != nil {
		return nil, err
	}
	d := &Device{opts: opts, inst: inst, pipelines: map[string]vk.Pipeline{}, sets: map[setKey]vk.DescriptorSet{}}
	if len(exts) > 0 {
		if d.messenger, err = inst.CreateDebugMessenger(d.onMessage); err != nil {
			d.Close()
			return nil, err
		}
	}
	if err := d.choose(index, allowCPU); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.setup(); err != nil {
		d.Close()
		return nil, fmt.Errorf("gpu: %s: %w", d.Info.Name, err)
	}
	return d, nil
}

func (d *Device) choose(index int, allowCPU bool) error {
	pds, err := d.inst.PhysicalDevices()
	if err != nil {
		return err
	}
	if len(pds) == 0 {
		return fmt.Errorf("%w: the Vulkan loader found no device (is a driver's ICD installed? NVIDIA's needs NVIDIA_DRIVER_CAPABILITIES to include graphics)", ErrNoDevice)
	}
	if index >= len(pds) {
		return fmt.Errorf("%w: vulkan:%d asked for, but there are %d devices (vulkan:0 to vulkan:%d)", ErrNoDevice, index, len(pds), len(pds)-1)
	}
	rank := map[uint32]int{vk.DeviceTypeDiscrete: 0, vk.DeviceTypeIntegrated: 1, vk.DeviceTypeVirtual: 2, vk.DeviceTypeCPU: 4}
	best, bestRank := -1, 99
	var reasons []string
	for i, pd := range pds {
		if index >= 0 && i != index {
			continue
		}
		info := pd.Info()
		in := describe(i, info)
		if len(in.Missing) > 0 {
			reasons = append(reasons, fmt.Sprintf("vulkan:%d %s lacks %s", i, in.Name, strings.Join(in.Missing, ", ")))
			continue
		}
		if in.CPU && !allowCPU && index < 0 {
			reasons = append(reasons, fmt.Sprintf("vulkan:%d %s is a software device", i, in.Name))
			continue
		}
		r, ok := rank[info.Type]
		if !ok {
			r = 3
		}
		if r < bestRank {
			best, bestRank = i, r
			d.info, d.Info = info, in
		}
	}
	if best < 0 {
		return fmt.Errorf("%w: %s", ErrNoDevice, strings.Join(reasons, "; "))
	}
	dev, err := pds[best].CreateDevice(d.info.ComputeQueueFamily, nil, vk.DeviceFeatures{StorageBuffer8Bit: true, StorageBuffer16Bit: true})
	if err != nil {
		return err
	}
	d.dev = dev
	return nil
}

func (d *Device) onMessage(m vk.DebugMessage) {
	if m.Severity < 0x1000 { // VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT
		return
	}
	d.validMu.Lock()
	d.valid = append(d.valid, m.Text)
	d.validMu.Unlock()
	d.log("vulkan validation: " + m.Text)
}

// ValidationErrors returns the validation layer's error messages so far.
func (d *Device) ValidationErrors() []string {
	d.validMu.Lock()
	defer d.validMu.Unlock()
	return slices.Clone(d.valid)
}

func (d *Device) log(s string) {
	if d.opts.Log != nil {
		d.opts.Log(s)
	}
}

// maxTimers is the timestamp pool's size: the Forward's start and end,
// then one per dispatch when profiling.
const maxTimers = 4096

// shaders lists the pipelines, by embedded file name.
var shaders = []string{"rmsnorm", "quant_q8", "swiglu", "rope_store", "attention", "moe_route", "combine", "topk",
	"matmul_f32", "matmul_f16", "matmul_bf16", "matmul_q8_0", "matmul_q4_0"}

const (
	bindings  = 8   // every shader's storage buffers, bound 0..7
	pushBytes = 128 // the push constant range every shader shares
)

func (d *Device) setup() (err error) {
	d.queue = d.dev.Queue(d.info.ComputeQueueFamily)
	d.limit = d.info.DeviceLocalBudget
	if d.opts.MemoryLimit > 0 {
		d.limit = min(d.limit, d.opts.MemoryLimit)
	}
	if d.cmdPool, err = d.dev.CreateCommandPool(d.info.ComputeQueueFamily); err != nil {
		return err
	}
	if d.cmd, err = d.dev.AllocateCommandBuffer(d.cmdPool); err != nil {
		return err
	}
	if d.fence, err = d.dev.CreateFence(); err != nil {
		return err
	}
	if d.info.TimestampCompute {
		if d.timers, err = d.dev.CreateTimestampPool(maxTimers); err != nil {
			return err
		}
	}
	if d.setLayout, err = d.dev.CreateStorageLayout(bindings); err != nil {
		return err
	}
	if d.layout, err = d.dev.CreatePipelineLayout(d.setLayout, pushBytes); err != nil {
		return err
	}
	for _, name := range shaders {
		code, err := spvFiles.ReadFile("spv/" + name + ".spv")
		if err != nil {
			return err
		}
		mod, err := d.dev.CreateShaderModule(code)
		if err != nil {
			return fmt.Errorf("shader %s: %w", name, err)
		}
		// matmul comes in one variant per activation rows per pass.
		variants := map[string][]uint32{name: nil}
		if strings.HasPrefix(name, "matmul_") {
			variants = map[string][]uint32{}
			for _, nr := range matmulPass {
				variants[fmt.Sprintf("%s/%d", name, nr)] = []uint32{uint32(nr)}
			}
		}
		for vname, spec := range variants {
			p, err := d.dev.CreateComputePipeline(mod, d.layout, spec)
			if err != nil {
				d.dev.DestroyShaderModule(mod)
				return fmt.Errorf("pipeline %s: %w", vname, err)
			}
			d.pipelines[vname] = p
		}
		d.dev.DestroyShaderModule(mod)
	}
	if d.dummy, err = d.NewBuffer(16, false); err != nil {
		return err
	}
	d.staging, err = d.NewBuffer(stagingBytes, true)
	return err
}

// Close releases everything the device holds; buffers it made must be
// closed first.
func (d *Device) Close() {
	if d.dev != 0 {
		d.dev.WaitIdle()
		d.dummy.Close()
		d.staging.Close()
		for _, p := range d.pipelines {
			d.dev.DestroyPipeline(p)
		}
		for _, p := range d.pools {
			d.dev.DestroyDescriptorPool(p)
		}
		if d.layout != 0 {
			d.dev.DestroyPipelineLayout(d.layout)
		}
		if d.setLayout != 0 {
			d.dev.DestroySetLayout(d.setLayout)
		}
		if d.timers != 0 {
			d.dev.DestroyQueryPool(d.timers)
		}
		if d.fence != 0 {
			d.dev.DestroyFence(d.fence)
		}
		if d.cmdPool != 0 {
			d.dev.DestroyCommandPool(d.cmdPool)
		}
		d.dev.Destroy()
		d.dev = 0
	}
	if d.messenger != 0 {
		d.inst.DestroyDebugMessenger(d.messenger)
		d.messenger = 0
	}
	if d.inst != 0 {
		d.inst.Destroy()
		d.inst = 0
	}
}

// Buffer is one storage buffer with its own memory: device-local, or
// host-visible and mapped.
type Buffer struct {
	d    *Device
	buf  vk.Buffer
	mem  vk.DeviceMemory
	size uint64
	ptr  unsafe.Pointer // mapped, for a host-visible buffer
}

// NewBuffer allocates size bytes (rounded up to 16). It refuses a size
// beyond the device's largest storage binding or its memory budget.
func (d *Device) NewBuffer(size uint64, host bool) (*Buffer, error) {
	size = max(16, (size+15)&^15)
	if size > d.info.MaxStorageBuffer {
		return nil, fmt.Errorf("%w: a %s buffer exceeds the device's largest storage binding of %s", ErrDeviceMemory, human(size), human(d.info.MaxStorageBuffer))
	}
	if !host && d.used+size > d.limit {
		return nil, fmt.Errorf("%w: %s more would bring the backend to %s, past the %s it may use on %s", ErrDeviceMemory,
			human(size), human(d.used+size), human(d.limit), d.Info.Name)
	}
	usage := uint32(vk.BufferUsageStorage | vk.BufferUsageTransferSrc | vk.BufferUsageTransferDst | vk.BufferUsageIndirect)
	buf, err := d.dev.CreateBuffer(size, usage)
	if err != nil {
		return nil, err
	}
	need, _, bits := d.dev.BufferRequirements(buf)
	want := uint32(vk.MemoryDeviceLocal)
	if host {
		want = vk.MemoryHostVisible | vk.MemoryHostCoherent
	}
	ti := -1
	if host { // prefer cached host memory for read-back
		ti = d.info.MemoryType(bits, want|vk.MemoryHostCached)
	}
	if ti < 0 {
		ti = d.info.MemoryType(bits, want)
	}
	if ti < 0 {
		d.dev.DestroyBuffer(buf)
		return nil, fmt.Errorf("gpu: no memory type for a buffer (want flags %#x)", want)
	}
	mem, err := d.dev.Allocate(need, ti)
	if err != nil {
		d.dev.DestroyBuffer(buf)
		var ve *vk.Error
		if errors.As(err, &ve) && (ve.Result == vk.ErrOutOfDevMemory || ve.Result == vk.ErrOutOfHostMemory) {
			return nil, fmt.Errorf("%w: the driver could not allocate %s more on %s (%s allocated so far)", ErrDeviceMemory, human(need), d.Info.Name, human(d.used))
		}
		return nil, err
	}
	b := &Buffer{d: d, buf: buf, mem: mem, size: size}
	if err := d.dev.Bind(buf, mem, 0); err != nil {
		b.Close()
		return nil, err
	}
	if host {
		if b.ptr, err = d.dev.Map(mem, size); err != nil {
			b.Close()
			return nil, err
		}
	} else {
		d.used += need
	}
	return b, nil
}

// Close frees b (nil-safe, idempotent).
func (b *Buffer) Close() {
	if b == nil || b.buf == 0 {
		return
	}
	d := b.d
	if b.ptr != nil {
		d.dev.Unmap(b.mem)
	} else {
		need, _, _ := d.dev.BufferRequirements(b.buf)
		d.used -= need
	}
	d.dev.DestroyBuffer(b.buf)
	d.dev.Free(b.mem)
	b.buf, b.ptr = 0, nil
}

// Bytes returns the mapped memory of a host-visible buffer.
func (b *Buffer) Bytes() []byte { return unsafe.Slice((*byte)(b.ptr), b.size) }

// Floats returns the mapped memory of a host-visible buffer as float32s.
func (b *Buffer) Floats() []float32 { return unsafe.Slice((*float32)(b.ptr), b.size/4) }

// Ints returns the mapped memory of a host-visible buffer as int32s.
func (b *Buffer) Ints() []int32 { return unsafe.Slice((*int32)(b.ptr), b.size/4) }

// stagingBytes is the upload chunk: weights stream through it, so the
// host never holds more than one converted matrix plus this.
const stagingBytes = 32 << 20

// Write copies data into the device-local buffer b at offset, through the
// staging buffer.
func (d *Device) Write(b *Buffer, offset uint64, data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(data) > 0 {
		n := min(len(data), stagingBytes)
		copy(d.staging.Bytes(), data[:n])
		if err := d.submit(func(c vk.CommandBuffer) {
			c.CopyBuffer(d.staging.buf, b.buf, 0, offset, uint64((n+3)&^3))
		}); err != nil {
			return err
		}
		data = data[n:]
		offset += uint64(n)
	}
	return nil
}

// submit records commands into the device's command buffer, submits them
// and waits. The caller holds d.mu.
func (d *Device) submit(record func(vk.CommandBuffer)) error {
	c := d.cmd
	if err := c.Reset(); err != nil {
		return err
	}
	if err := c.Begin(); err != nil {
		return err
	}
	record(c)
	if err := c.End(); err != nil {
		return err
	}
	if err := d.dev.ResetFence(d.fence); err != nil {
		return err
	}
	if err := d.queue.Submit(c, d.fence); err != nil {
		return err
	}
	// A minute is far beyond any one submission; a lost device or a hung
	// shader ends in an error, not a hang.
	return d.dev.WaitFence(d.fence, 60e9)
}

type setKey [bindings]vk.Buffer

// set returns a descriptor set binding bufs (the rest bound to a dummy),
// made once per combination.
func (d *Device) set(bufs ...*Buffer) (vk.DescriptorSet, error) {
	var key setKey
	ranges := make([]vk.BufferRange, bindings)
	for i := range ranges {
		b := d.dummy
		if i < len(bufs) && bufs[i] != nil {
			b = bufs[i]
		}
		key[i] = b.buf
		ranges[i] = vk.BufferRange{Buffer: b.buf, Size: b.size}
	}
	if s, ok := d.sets[key]; ok {
		return s, nil
	}
	if d.poolLeft == 0 {
		const perPool = 1024
		p, err := d.dev.CreateDescriptorPool(perPool, perPool*bindings)
		if err != nil {
			return 0, err
		}
		d.pools = append(d.pools, p)
		d.poolLeft = perPool
	}
	s, err := d.dev.AllocateSet(d.pools[len(d.pools)-1], d.setLayout)
	if err != nil {
		return 0, err
	}
	d.poolLeft--
	d.dev.WriteStorageBuffers(s, ranges)
	d.sets[key] = s
	return s, nil
}

// forget drops the cached descriptor sets that bind any of bufs, before
// they are freed. (The sets stay allocated in their pool; buffers are
// freed rarely: scratch growth and cache release.)
func (d *Device) forget(bufs ...*Buffer) {
	for k := range d.sets {
		for _, b := range bufs {
			if b != nil && slices.Contains(k[:], b.buf) {
				delete(d.sets, k)
				break
			}
		}
	}
}

func human(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", (n+1023)/1024)
}
