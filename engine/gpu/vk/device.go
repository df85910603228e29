package vk

import (
	"fmt"
	"math"
	"unsafe"
)

// DeviceInfo is what the engine reads of a physical device.
type DeviceInfo struct {
	Name                 string
	Type                 uint32
	APIVersion           uint32
	VendorID, DeviceID   uint32
	MaxStorageBuffer     uint64 // maxStorageBufferRange: the largest binding
	MaxPushConstants     uint32
	MaxSharedMemory      uint32
	MaxWorkGroupCount    [3]uint32
	MaxInvocations       uint32
	MinStorageAlignment  uint64
	TimestampPeriod      float32 // nanoseconds per timestamp tick
	TimestampCompute     bool
	SubgroupSize         uint32
	SubgroupArithmetic   bool   // subgroupAdd and friends in compute shaders
	DeviceLocalBytes     uint64 // the largest device-local heap
	DeviceLocalBudget    uint64 // what the driver says this process may use of it (VK_EXT_memory_budget), or DeviceLocalBytes
	StorageBuffer8Bit    bool
	StorageBuffer16Bit   bool
	ShaderFloat16        bool
	ShaderInt8           bool
	ShaderInt64          bool
	IntegerDotProduct    bool // VK_KHR_shader_integer_dot_product
	CooperativeMatrix    bool // VK_KHR_cooperative_matrix
	MemoryBudgetExt      bool
	Extensions           map[string]bool
	ComputeQueueFamily   int // -1: none
	TimestampValidBits   uint32
	memoryTypes          []memoryType
	memoryHeapsSizes     []uint64
	memoryHeapDeviceFlag []bool
}

// TypeName names the device type.
func (d *DeviceInfo) TypeName() string {
	switch d.Type {
	case DeviceTypeIntegrated:
		return "integrated GPU"
	case DeviceTypeDiscrete:
		return "discrete GPU"
	case DeviceTypeVirtual:
		return "virtual GPU"
	case DeviceTypeCPU:
		return "CPU"
	}
	return "other"
}

// Info reads a physical device's properties, features, memory and queues.
func (pd PhysicalDevice) Info() *DeviceInfo {
	sub := &subgroupProperties{sType: stSubgroupProperties}
	p2 := &properties2{sType: stProperties2, pNext: unsafe.Pointer(sub)}
	vkGetPhysicalDeviceProperties2(pd, p2)
	p := &p2.props
	info := &DeviceInfo{
		APIVersion: p.u32(0), VendorID: p.u32(8), DeviceID: p.u32(12), Type: p.u32(16),
		Name:                gostring(p[20 : 20+256]),
		MaxStorageBuffer:    uint64(p.u32(324)),
		MaxPushConstants:    p.u32(328),
		MaxSharedMemory:     p.u32(512),
		MaxWorkGroupCount:   [3]uint32{p.u32(516), p.u32(520), p.u32(524)},
		MaxInvocations:      p.u32(528),
		MinStorageAlignment: p.u64(624),
		TimestampCompute:    p.u32(716) != 0,
		TimestampPeriod:     math.Float32frombits(p.u32(720)),
		SubgroupSize:        sub.subgroupSize,
		SubgroupArithmetic:  sub.supportedStages&ShaderStageCompute != 0 && sub.supportedOperations&subgroupArithmeticBit != 0,
		Extensions:          map[string]bool{},
		ComputeQueueFamily:  -1,
	}
	v12 := &vulkan12Features{sType: stVulkan12Features}
	v11 := &vulkan11Features{sType: stVulkan11Features, pNext: unsafe.Pointer(v12)}
	f2 := &features2{sType: stFeatures2, pNext: unsafe.Pointer(v11)}
	if info.APIVersion >= MakeVersion(1, 2, 0) {
		vkGetPhysicalDeviceFeatures2(pd, f2)
		info.StorageBuffer16Bit = v11.flags[feat11StorageBuffer16] != 0
		info.StorageBuffer8Bit = v12.flags[feat12StorageBuffer8] != 0
		info.ShaderFloat16 = v12.flags[feat12ShaderFloat16] != 0
		info.ShaderInt8 = v12.flags[feat12ShaderInt8] != 0
		info.ShaderInt64 = f2.features[feat10ShaderInt64] != 0
	}

	var n uint32
	if vkEnumerateDeviceExtensionProperties(pd, nil, &n, nil) >= 0 && n > 0 {
		exts := make([]extensionProperties, n)
		if vkEnumerateDeviceExtensionProperties(pd, nil, &n, &exts[0]) >= 0 {
			for _, e := range exts[:n] {
				info.Extensions[gostring(e.name[:])] = true
			}
		}
	}
	info.IntegerDotProduct = info.Extensions["VK_KHR_shader_integer_dot_product"] || info.APIVersion >= MakeVersion(1, 3, 0)
	info.CooperativeMatrix = info.Extensions["VK_KHR_cooperative_matrix"]
	info.MemoryBudgetExt = info.Extensions["VK_EXT_memory_budget"]

	budget := &memoryBudget{sType: stMemoryBudgetProperties}
	mp := &memoryProperties2{sType: stMemoryProperties2}
	if info.MemoryBudgetExt {
		mp.pNext = unsafe.Pointer(budget)
	}
	vkGetPhysicalDeviceMemoryProperties2(pd, mp)
	m := &mp.props
	info.memoryTypes = append([]memoryType(nil), m.types[:m.typeCount]...)
	for h := uint32(0); h < m.heapCount; h++ {
		info.memoryHeapsSizes = append(info.memoryHeapsSizes, m.heaps[h].size)
		local := m.heaps[h].flags&1 != 0 // VK_MEMORY_HEAP_DEVICE_LOCAL_BIT
		info.memoryHeapDeviceFlag = append(info.memoryHeapDeviceFlag, local)
		if local && m.heaps[h].size > info.DeviceLocalBytes {
			info.DeviceLocalBytes = m.heaps[h].size
			info.DeviceLocalBudget = m.heaps[h].size
			if info.MemoryBudgetExt && budget.budget[h] > 0 {
				info.DeviceLocalBudget = budget.budget[h]
			}
		}
	}

	n = 0
	vkGetPhysicalDeviceQueueFamilyProps(pd, &n, nil)
	if n > 0 {
		qs := make([]queueFamilyProperties, n)
		vkGetPhysicalDeviceQueueFamilyProps(pd, &n, &qs[0])
		for i, q := range qs[:n] {
			if q.queueFlags&QueueCompute != 0 && q.queueCount > 0 {
				info.ComputeQueueFamily = i
				info.TimestampValidBits = q.timestampValidBits
				break
			}
		}
	}
	return info
}

// MemoryType picks the first memory type allowed by typeBits that has all
// of the want flags, or -1.
func (d *DeviceInfo) MemoryType(typeBits, want uint32) int {
	for i, t := range d.memoryTypes {
		if typeBits&(1<<i) != 0 && t.propertyFlags&want == want {
			return i
		}
	}
	return -1
}

// MemoryTypeFlags returns the property flags of memory type i.
func (d *DeviceInfo) MemoryTypeFlags(i int) uint32 { return d.memoryTypes[i].propertyFlags }

// DeviceFeatures are the optional features a device is created with.
type DeviceFeatures struct {
	StorageBuffer8Bit, StorageBuffer16Bit bool
	ShaderFloat16, ShaderInt8             bool
}

// CreateDevice creates a logical device with one queue of family, the given
// extensions and features.
func (pd PhysicalDevice) CreateDevice(family int, extensions []string, f DeviceFeatures) (Device, error) {
	prio := new(float32)
	*prio = 1
	qi := &deviceQueueCreateInfo{sType: stDeviceQueueCreateInfo, queueFamilyIndex: uint32(family), queueCount: 1, priorities: prio}
	v12 := &vulkan12Features{sType: stVulkan12Features}
	v11 := &vulkan11Features{sType: stVulkan11Features, pNext: unsafe.Pointer(v12)}
	f2 := &features2{sType: stFeatures2, pNext: unsafe.Pointer(v11)}
	b := func(v bool) uint32 {
		if v {
			return 1
		}
		return 0
	}
	v11.flags[feat11StorageBuffer16] = b(f.StorageBuffer16Bit)
	v12.flags[feat12StorageBuffer8] = b(f.StorageBuffer8Bit)
	v12.flags[feat12ShaderFloat16] = b(f.ShaderFloat16)
	v12.flags[feat12ShaderInt8] = b(f.ShaderInt8)
	ci := &deviceCreateInfo{sType: stDeviceCreateInfo, pNext: unsafe.Pointer(f2), queueCreateInfoCount: 1, queueCreateInfos: qi,
		enabledExtensionCount: uint32(len(extensions)), enabledExtensionNames: cstrings(extensions)}
	var d Device
	if err := check("vkCreateDevice", vkCreateDevice(pd, ci, nil, &d)); err != nil {
		return 0, err
	}
	return d, nil
}

// Destroy destroys the device.
func (d Device) Destroy() { vkDestroyDevice(d, nil) }

// WaitIdle waits for all of the device's work.
func (d Device) WaitIdle() error { return check("vkDeviceWaitIdle", vkDeviceWaitIdle(d)) }

// Queue returns queue 0 of family.
func (d Device) Queue(family int) Queue {
	var q Queue
	vkGetDeviceQueue(d, uint32(family), 0, &q)
	return q
}

// CreateBuffer creates an exclusive buffer of size bytes.
func (d Device) CreateBuffer(size uint64, usage uint32) (Buffer, error) {
	ci := &bufferCreateInfo{sType: stBufferCreateInfo, size: size, usage: usage}
	var b Buffer
	if err := check("vkCreateBuffer", vkCreateBuffer(d, ci, nil, &b)); err != nil {
		return 0, err
	}
	return b, nil
}

// DestroyBuffer destroys b.
func (d Device) DestroyBuffer(b Buffer) { vkDestroyBuffer(d, b, nil) }

// BufferRequirements returns b's memory size, alignment and allowed types.
func (d Device) BufferRequirements(b Buffer) (size, align uint64, typeBits uint32) {
	var r memoryRequirements
	vkGetBufferMemoryRequirements(d, b, &r)
	return r.size, r.alignment, r.memoryTypeBits
}

// Allocate allocates size bytes of memory type typeIndex.
func (d Device) Allocate(size uint64, typeIndex int) (DeviceMemory, error) {
	ai := &memoryAllocateInfo{sType: stMemoryAllocateInfo, allocationSize: size, memoryTypeIndex: uint32(typeIndex)}
	var m DeviceMemory
	if err := check("vkAllocateMemory", vkAllocateMemory(d, ai, nil, &m)); err != nil {
		return 0, err
	}
	return m, nil
}

// Free frees memory.
func (d Device) Free(m DeviceMemory) { vkFreeMemory(d, m, nil) }

// Bind binds b to m at offset.
func (d Device) Bind(b Buffer, m DeviceMemory, offset uint64) error {
	return check("vkBindBufferMemory", vkBindBufferMemory(d, b, m, offset))
}

// Map maps all of m into the process and returns its first byte.
func (d Device) Map(m DeviceMemory, size uint64) (unsafe.Pointer, error) {
	var p unsafe.Pointer
	if err := check("vkMapMemory", vkMapMemory(d, m, 0, size, 0, &p)); err != nil {
		return nil, err
	}
	return p, nil
}

// Unmap unmaps m.
func (d Device) Unmap(m DeviceMemory) { vkUnmapMemory(d, m) }

// CreateShaderModule wraps SPIR-V code (a whole number of 32-bit words).
func (d Device) CreateShaderModule(code []byte) (ShaderModule, error) {
	if len(code) == 0 || len(code)%4 != 0 {
		return 0, fmt.Errorf("vk: SPIR-V module of %d bytes is not a whole number of words", len(code))
	}
	words := make([]uint32, len(code)/4)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(code)), code)
	ci := &shaderModuleCreateInfo{sType: stShaderModuleCreateInfo, codeSize: uintptr(len(code)), code: &words[0]}
	var m ShaderModule
	if err := check("vkCreateShaderModule", vkCreateShaderModule(d, ci, nil, &m)); err != nil {
		return 0, err
	}
	return m, nil
}

// DestroyShaderModule destroys m.
func (d Device) DestroyShaderModule(m ShaderModule) { vkDestroyShaderModule(d, m, nil) }

// CreateStorageLayout makes a set layout of n storage buffers at bindings
// 0..n-1, visible to compute shaders.
func (d Device) CreateStorageLayout(n int) (DescriptorSetLayout, error) {
	bs := make([]setLayoutBinding, n)
	for i := range bs {
		bs[i] = setLayoutBinding{binding: uint32(i), descriptorType: DescriptorStorageBuffer, descriptorCount: 1, stageFlags: ShaderStageCompute}
	}
	ci := &setLayoutCreateInfo{sType: stSetLayoutCreateInfo, bindingCount: uint32(n)}
	if n > 0 {
		ci.bindings = &bs[0]
	}
	var l DescriptorSetLayout
	if err := check("vkCreateDescriptorSetLayout", vkCreateDescriptorSetLayout(d, ci, nil, &l)); err != nil {
		return 0, err
	}
	return l, nil
}

// DestroySetLayout destroys l.
func (d Device) DestroySetLayout(l DescriptorSetLayout) { vkDestroyDescriptorSetLayout(d, l, nil) }

// CreatePipelineLayout makes a layout of one set and pushBytes of push
// constants.
func (d Device) CreatePipelineLayout(set DescriptorSetLayout, pushBytes uint32) (PipelineLayout, error) {
	sets := []DescriptorSetLayout{set}
	ci := &pipelineLayoutCreateInfo{sType: stPipelineLayoutCreateInfo, setLayoutCount: 1, setLayouts: &sets[0]}
	if pushBytes > 0 {
		ci.pushConstantRangeCount = 1
		ci.pushConstantRanges = &pushConstantRange{stageFlags: ShaderStageCompute, size: pushBytes}
	}
	var l PipelineLayout
	if err := check("vkCreatePipelineLayout", vkCreatePipelineLayout(d, ci, nil, &l)); err != nil {
		return 0, err
	}
	return l, nil
}

// DestroyPipelineLayout destroys l.
func (d Device) DestroyPipelineLayout(l PipelineLayout) { vkDestroyPipelineLayout(d, l, nil) }

// CreateComputePipeline makes a pipeline of module's "main", with the
// 32-bit specialization constants spec (constant i = spec[i]).
func (d Device) CreateComputePipeline(module ShaderModule, layout PipelineLayout, spec []uint32) (Pipeline, error) {
	stage := shaderStageCreateInfo{sType: stShaderStageCreateInfo, stage: ShaderStageCompute, module: module, name: cstring("main")}
	if len(spec) > 0 {
		entries := make([]specializationMapEntry, len(spec))
		for i := range spec {
			entries[i] = specializationMapEntry{constantID: uint32(i), offset: uint32(4 * i), size: 4}
		}
		data := append([]uint32(nil), spec...)
		stage.specialization = &specializationInfo{mapEntryCount: uint32(len(spec)), mapEntries: &entries[0],
			dataSize: uintptr(4 * len(spec)), data: unsafe.Pointer(&data[0])}
	}
	ci := &computePipelineCreateInfo{sType: stComputePipelineInfo, stage: stage, layout: layout, basePipelineIndex: -1}
	var p Pipeline
	if err := check("vkCreateComputePipelines", vkCreateComputePipelines(d, 0, 1, ci, nil, &p)); err != nil {
		return 0, err
	}
	return p, nil
}

// DestroyPipeline destroys p.
func (d Device) DestroyPipeline(p Pipeline) { vkDestroyPipeline(d, p, nil) }

// CreateDescriptorPool makes a pool for maxSets sets of storage buffers.
func (d Device) CreateDescriptorPool(maxSets, buffers uint32) (DescriptorPool, error) {
	size := &descriptorPoolSize{typ: DescriptorStorageBuffer, descriptorCount: buffers}
	ci := &descriptorPoolCreateInfo{sType: stDescriptorPoolCreateInfo, maxSets: maxSets, poolSizeCount: 1, poolSizes: size}
	var p DescriptorPool
	if err := check("vkCreateDescriptorPool", vkCreateDescriptorPool(d, ci, nil, &p)); err != nil {
		return 0, err
	}
	return p, nil
}

// DestroyDescriptorPool destroys p and its sets.
func (d Device) DestroyDescriptorPool(p DescriptorPool) { vkDestroyDescriptorPool(d, p, nil) }

// AllocateSet allocates one set of layout l from p.
func (d Device) AllocateSet(p DescriptorPool, l DescriptorSetLayout) (DescriptorSet, error) {
	layouts := []DescriptorSetLayout{l}
	ai := &descriptorSetAllocateInfo{sType: stDescriptorSetAllocInfo, pool: p, descriptorSetCount: 1, setLayouts: &layouts[0]}
	var s DescriptorSet
	if err := check("vkAllocateDescriptorSets", vkAllocateDescriptorSets(d, ai, &s)); err != nil {
		return 0, err
	}
	return s, nil
}

// BufferRange is a buffer binding: size bytes from offset.
type BufferRange struct {
	Buffer       Buffer
	Offset, Size uint64
}

// WriteStorageBuffers points bindings 0..len(bufs)-1 of set at bufs.
func (d Device) WriteStorageBuffers(set DescriptorSet, bufs []BufferRange) {
	infos := make([]descriptorBufferInfo, len(bufs))
	writes := make([]writeDescriptorSet, len(bufs))
	for i, b := range bufs {
		infos[i] = descriptorBufferInfo{buffer: b.Buffer, offset: b.Offset, rng: b.Size}
		writes[i] = writeDescriptorSet{sType: stWriteDescriptorSet, dstSet: set, dstBinding: uint32(i), descriptorCount: 1,
			descriptorType: DescriptorStorageBuffer, bufferInfo: &infos[i]}
	}
	if len(writes) > 0 {
		vkUpdateDescriptorSets(d, uint32(len(writes)), &writes[0], 0, nil)
	}
}

// CreateCommandPool makes a pool whose buffers can be reset one by one.
func (d Device) CreateCommandPool(family int) (CommandPool, error) {
	ci := &commandPoolCreateInfo{sType: stCommandPoolCreateInfo, flags: CommandPoolResetBuffer, queueFamilyIndex: uint32(family)}
	var p CommandPool
	if err := check("vkCreateCommandPool", vkCreateCommandPool(d, ci, nil, &p)); err != nil {
		return 0, err
	}
	return p, nil
}

// DestroyCommandPool destroys p and its command buffers.
func (d Device) DestroyCommandPool(p CommandPool) { vkDestroyCommandPool(d, p, nil) }

// AllocateCommandBuffer allocates one primary command buffer.
func (d Device) AllocateCommandBuffer(p CommandPool) (CommandBuffer, error) {
	ai := &commandBufferAllocateInfo{sType: stCommandBufferAllocInfo, pool: p, commandBufferCount: 1}
	var c CommandBuffer
	if err := check("vkAllocateCommandBuffers", vkAllocateCommandBuffers(d, ai, &c)); err != nil {
		return 0, err
	}
	return c, nil
}

// CreateFence makes an unsignalled fence.
func (d Device) CreateFence() (Fence, error) {
	var f Fence
	if err := check("vkCreateFence", vkCreateFence(d, &fenceCreateInfo{sType: stFenceCreateInfo}, nil, &f)); err != nil {
		return 0, err
	}
	return f, nil
}

// DestroyFence destroys f.
func (d Device) DestroyFence(f Fence) { vkDestroyFence(d, f, nil) }

// WaitFence waits up to timeoutNs for f; a timeout is an error.
func (d Device) WaitFence(f Fence, timeoutNs uint64) error {
	r := vkWaitForFences(d, 1, &f, 1, timeoutNs)
	if r == Timeout {
		return &Error{Call: "vkWaitForFences", Result: r}
	}
	return check("vkWaitForFences", r)
}

// ResetFence makes f unsignalled.
func (d Device) ResetFence(f Fence) error { return check("vkResetFences", vkResetFences(d, 1, &f)) }

// CreateTimestampPool makes a pool of n timestamp queries.
func (d Device) CreateTimestampPool(n uint32) (QueryPool, error) {
	ci := &queryPoolCreateInfo{sType: stQueryPoolCreateInfo, queryType: QueryTypeTimestamp, queryCount: n}
	var p QueryPool
	if err := check("vkCreateQueryPool", vkCreateQueryPool(d, ci, nil, &p)); err != nil {
		return 0, err
	}
	return p, nil
}

// DestroyQueryPool destroys p.
func (d Device) DestroyQueryPool(p QueryPool) { vkDestroyQueryPool(d, p, nil) }

// Timestamps reads queries [0, len(out)) of p, waiting for them.
func (d Device) Timestamps(p QueryPool, out []uint64) error {
	if len(out) == 0 {
		return nil
	}
	return check("vkGetQueryPoolResults", vkGetQueryPoolResults(d, p, 0, uint32(len(out)), uintptr(8*len(out)),
		unsafe.Pointer(&out[0]), 8, QueryResult64|QueryResultWait))
}

// Submit submits one command buffer; fence is signalled when it is done.
func (q Queue) Submit(c CommandBuffer, fence Fence) error {
	cbs := []CommandBuffer{c}
	si := &submitInfo{sType: stSubmitInfo, commandBufferCount: 1, commandBuffers: &cbs[0]}
	return check("vkQueueSubmit", vkQueueSubmit(q, 1, si, fence))
}

// Begin starts recording c for one submission.
func (c CommandBuffer) Begin() error {
	return check("vkBeginCommandBuffer", vkBeginCommandBuffer(c, &commandBufferBeginInfo{sType: stCommandBufferBeginInfo, flags: CommandBufferOneTimeSubmit}))
}

// End finishes recording c.
func (c CommandBuffer) End() error { return check("vkEndCommandBuffer", vkEndCommandBuffer(c)) }

// Reset returns c to the initial state.
func (c CommandBuffer) Reset() error {
	return check("vkResetCommandBuffer", vkResetCommandBuffer(c, 0))
}

// BindPipeline binds a compute pipeline.
func (c CommandBuffer) BindPipeline(p Pipeline) { vkCmdBindPipeline(c, PipelineBindCompute, p) }

// BindSet binds set 0 of a compute pipeline layout.
func (c CommandBuffer) BindSet(l PipelineLayout, s DescriptorSet) {
	vkCmdBindDescriptorSets(c, PipelineBindCompute, l, 0, 1, &s, 0, nil)
}

// PushConstants sets size bytes of push constants from data.
func (c CommandBuffer) PushConstants(l PipelineLayout, data unsafe.Pointer, size uint32) {
	vkCmdPushConstants(c, l, ShaderStageCompute, 0, size, data)
}

// Dispatch records a dispatch of x*y*z workgroups.
func (c CommandBuffer) Dispatch(x, y, z uint32) { vkCmdDispatch(c, x, y, z) }

// DispatchIndirect records a dispatch whose group counts are three uint32s
// at offset in b.
func (c CommandBuffer) DispatchIndirect(b Buffer, offset uint64) { vkCmdDispatchIndirect(c, b, offset) }

// Barrier makes the writes of the src stages visible to the dst stages.
func (c CommandBuffer) Barrier(srcStage, dstStage, srcAccess, dstAccess uint32) {
	mb := &memoryBarrier{sType: stMemoryBarrier, srcAccessMask: srcAccess, dstAccessMask: dstAccess}
	vkCmdPipelineBarrier(c, srcStage, dstStage, 0, 1, mb, 0, nil, 0, nil)
}

// CopyBuffer copies size bytes.
func (c CommandBuffer) CopyBuffer(src, dst Buffer, srcOffset, dstOffset, size uint64) {
	r := &bufferCopy{srcOffset: srcOffset, dstOffset: dstOffset, size: size}
	vkCmdCopyBuffer(c, src, dst, 1, r)
}

// FillBuffer sets size bytes (a multiple of 4) from offset to the word v.
func (c CommandBuffer) FillBuffer(b Buffer, offset, size uint64, v uint32) {
	vkCmdFillBuffer(c, b, offset, size, v)
}

// ResetQueries resets queries [first, first+n) of p.
func (c CommandBuffer) ResetQueries(p QueryPool, first, n uint32) {
	vkCmdResetQueryPool(c, p, first, n)
}

// WriteTimestamp writes query q of p once the stage's earlier work is done.
func (c CommandBuffer) WriteTimestamp(stage uint32, p QueryPool, q uint32) {
	vkCmdWriteTimestamp(c, stage, p, q)
}
