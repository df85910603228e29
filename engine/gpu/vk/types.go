package vk

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// Dispatchable handles are pointers in C; the others are 64-bit values.
type (
	Instance       uintptr
	PhysicalDevice uintptr
	Device         uintptr
	Queue          uintptr
	CommandBuffer  uintptr

	Buffer              uint64
	DeviceMemory        uint64
	ShaderModule        uint64
	Pipeline            uint64
	PipelineLayout      uint64
	DescriptorSetLayout uint64
	DescriptorPool      uint64
	DescriptorSet       uint64
	CommandPool         uint64
	Fence               uint64
	QueryPool           uint64
	DebugMessenger      uint64
)

// Result is a VkResult.
type Result int32

// The structure types this package fills in.
const (
	stApplicationInfo          = 0
	stInstanceCreateInfo       = 1
	stDeviceQueueCreateInfo    = 2
	stDeviceCreateInfo         = 3
	stSubmitInfo               = 4
	stMemoryAllocateInfo       = 5
	stFenceCreateInfo          = 8
	stQueryPoolCreateInfo      = 11
	stBufferCreateInfo         = 12
	stShaderModuleCreateInfo   = 16
	stShaderStageCreateInfo    = 18
	stComputePipelineInfo      = 29
	stPipelineLayoutCreateInfo = 30
	stSetLayoutCreateInfo      = 32
	stDescriptorPoolCreateInfo = 33
	stDescriptorSetAllocInfo   = 34
	stWriteDescriptorSet       = 35
	stCommandPoolCreateInfo    = 39
	stCommandBufferAllocInfo   = 40
	stCommandBufferBeginInfo   = 42
	stMemoryBarrier            = 46
	stVulkan11Features         = 49
	stVulkan12Features         = 51
	stSubgroupProperties       = 1000094000
	stFeatures2                = 1000059000
	stProperties2              = 1000059001
	stMemoryProperties2        = 1000059006
	stMemoryBudgetProperties   = 1000237000
	stDebugMessengerCreateInfo = 1000128004
)

// Flags and enumerants used by the engine.
const (
	QueueCompute = 0x2

	MemoryDeviceLocal  = 0x1
	MemoryHostVisible  = 0x2
	MemoryHostCoherent = 0x4
	MemoryHostCached   = 0x8

	BufferUsageTransferSrc = 0x1
	BufferUsageTransferDst = 0x2
	BufferUsageStorage     = 0x20
	BufferUsageIndirect    = 0x100

	DescriptorStorageBuffer = 7
	ShaderStageCompute      = 0x20
	PipelineBindCompute     = 1

	PipelineStageTopOfPipe    = 0x1
	PipelineStageDrawIndirect = 0x2
	PipelineStageCompute      = 0x800
	PipelineStageTransfer     = 0x1000
	PipelineStageBottomOfPipe = 0x2000
	PipelineStageHost         = 0x4000

	AccessIndirectCommandRead = 0x1
	AccessShaderRead          = 0x20
	AccessShaderWrite         = 0x40
	AccessTransferRead        = 0x800
	AccessTransferWrite       = 0x1000
	AccessHostRead            = 0x2000
	AccessHostWrite           = 0x4000

	CommandBufferOneTimeSubmit = 0x1
	CommandPoolResetBuffer     = 0x2
	DescriptorPoolFreeSet      = 0x1

	QueryTypeTimestamp = 2
	QueryResult64      = 0x1
	QueryResultWait    = 0x2

	DebugSeverityWarning = 0x100
	DebugSeverityError   = 0x1000
	DebugTypeGeneral     = 0x1
	DebugTypeValidation  = 0x2
	DebugTypePerformance = 0x4
)

// Results the engine distinguishes.
const (
	Success            Result = 0
	NotReady           Result = 1
	Timeout            Result = 2
	Incomplete         Result = 5
	ErrOutOfHostMemory Result = -1
	ErrOutOfDevMemory  Result = -2
	ErrInitFailed      Result = -3
	ErrDeviceLost      Result = -4
	ErrLayerNotPresent Result = -6
	ErrExtNotPresent   Result = -7
	ErrFeatureMissing  Result = -8
	ErrIncompatible    Result = -9
)

// Physical device types.
const (
	DeviceTypeOther      = 0
	DeviceTypeIntegrated = 1
	DeviceTypeDiscrete   = 2
	DeviceTypeVirtual    = 3
	DeviceTypeCPU        = 4
)

// MakeVersion packs a Vulkan API version.
func MakeVersion(major, minor, patch uint32) uint32 { return major<<22 | minor<<12 | patch }

// VersionString formats a packed API version.
func VersionString(v uint32) string {
	return itoa(v>>22&0x7f) + "." + itoa(v>>12&0x3ff) + "." + itoa(v&0xfff)
}

func itoa(v uint32) string {
	if v == 0 {
		return "0"
	}
	var b [10]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}

// The C structures, laid out as the C compiler lays them out on 64-bit
// targets (checked against the header's offsetof and sizeof in
// TestStructLayout).

type applicationInfo struct {
	sType         uint32
	pNext         unsafe.Pointer
	appName       *byte
	appVersion    uint32
	engineName    *byte
	engineVersion uint32
	apiVersion    uint32
}

type instanceCreateInfo struct {
	sType                 uint32
	pNext                 unsafe.Pointer
	flags                 uint32
	appInfo               *applicationInfo
	enabledLayerCount     uint32
	enabledLayerNames     **byte
	enabledExtensionCount uint32
	enabledExtensionNames **byte
}

type deviceQueueCreateInfo struct {
	sType            uint32
	pNext            unsafe.Pointer
	flags            uint32
	queueFamilyIndex uint32
	queueCount       uint32
	priorities       *float32
}

type deviceCreateInfo struct {
	sType                 uint32
	pNext                 unsafe.Pointer
	flags                 uint32
	queueCreateInfoCount  uint32
	queueCreateInfos      *deviceQueueCreateInfo
	enabledLayerCount     uint32
	enabledLayerNames     **byte
	enabledExtensionCount uint32
	enabledExtensionNames **byte
	enabledFeatures       unsafe.Pointer
}

// Features2 is VkPhysicalDeviceFeatures2: the 55 Vulkan 1.0 feature flags.
type features2 struct {
	sType    uint32
	pNext    unsafe.Pointer
	features [55]uint32
}

// vulkan11Features is VkPhysicalDeviceVulkan11Features.
type vulkan11Features struct {
	sType uint32
	pNext unsafe.Pointer
	flags [12]uint32 // [0] storageBuffer16BitAccess
}

// vulkan12Features is VkPhysicalDeviceVulkan12Features.
type vulkan12Features struct {
	sType uint32
	pNext unsafe.Pointer
	flags [47]uint32 // [2] storageBuffer8BitAccess, [7] shaderFloat16, [8] shaderInt8
}

const (
	feat11StorageBuffer16 = 0
	feat12StorageBuffer8  = 2
	feat12ShaderFloat16   = 7
	feat12ShaderInt8      = 8
	feat10ShaderInt64     = 40 // VkPhysicalDeviceFeatures.shaderInt64 (0-based: robustBufferAccess is 0)
)

// properties is VkPhysicalDeviceProperties as raw bytes; the accessors
// read the fields the engine uses at their C offsets.
type properties [824]byte

func (p *properties) u32(off int) uint32 { return binary.LittleEndian.Uint32(p[off:]) }
func (p *properties) u64(off int) uint64 { return binary.LittleEndian.Uint64(p[off:]) }

type properties2 struct {
	sType uint32
	pNext unsafe.Pointer
	props properties
}

const subgroupArithmeticBit = 0x4 // VK_SUBGROUP_FEATURE_ARITHMETIC_BIT

type subgroupProperties struct {
	sType                     uint32
	pNext                     unsafe.Pointer
	subgroupSize              uint32
	supportedStages           uint32
	supportedOperations       uint32
	quadOperationsInAllStages uint32
}

type memoryType struct {
	propertyFlags uint32
	heapIndex     uint32
}

type memoryHeap struct {
	size  uint64
	flags uint32
	_     uint32
}

type memoryProperties struct {
	typeCount uint32
	types     [32]memoryType
	heapCount uint32
	heaps     [16]memoryHeap
}

type memoryProperties2 struct {
	sType uint32
	pNext unsafe.Pointer
	props memoryProperties
}

type memoryBudget struct {
	sType  uint32
	pNext  unsafe.Pointer
	budget [16]uint64
	usage  [16]uint64
}

type queueFamilyProperties struct {
	queueFlags         uint32
	queueCount         uint32
	timestampValidBits uint32
	granularity        [3]uint32
}

type bufferCreateInfo struct {
	sType                 uint32
	pNext                 unsafe.Pointer
	flags                 uint32
	size                  uint64
	usage                 uint32
	sharingMode           uint32
	queueFamilyIndexCount uint32
	queueFamilyIndices    *uint32
}

type memoryRequirements struct {
	size           uint64
	alignment      uint64
	memoryTypeBits uint32
}

type memoryAllocateInfo struct {
	sType           uint32
	pNext           unsafe.Pointer
	allocationSize  uint64
	memoryTypeIndex uint32
}

type shaderModuleCreateInfo struct {
	sType    uint32
	pNext    unsafe.Pointer
	flags    uint32
	codeSize uintptr
	code     *uint32
}

type setLayoutBinding struct {
	binding           uint32
	descriptorType    uint32
	descriptorCount   uint32
	stageFlags        uint32
	immutableSamplers unsafe.Pointer
}

type setLayoutCreateInfo struct {
	sType        uint32
	pNext        unsafe.Pointer
	flags        uint32
	bindingCount uint32
	bindings     *setLayoutBinding
}

type pushConstantRange struct {
	stageFlags uint32
	offset     uint32
	size       uint32
}

type pipelineLayoutCreateInfo struct {
	sType                  uint32
	pNext                  unsafe.Pointer
	flags                  uint32
	setLayoutCount         uint32
	setLayouts             *DescriptorSetLayout
	pushConstantRangeCount uint32
	pushConstantRanges     *pushConstantRange
}

type specializationMapEntry struct {
	constantID uint32
	offset     uint32
	size       uintptr
}

type specializationInfo struct {
	mapEntryCount uint32
	mapEntries    *specializationMapEntry
	dataSize      uintptr
	data          unsafe.Pointer
}

type shaderStageCreateInfo struct {
	sType          uint32
	pNext          unsafe.Pointer
	flags          uint32
	stage          uint32
	module         ShaderModule
	name           *byte
	specialization *specializationInfo
}

type computePipelineCreateInfo struct {
	sType              uint32
	pNext              unsafe.Pointer
	flags              uint32
	stage              shaderStageCreateInfo
	layout             PipelineLayout
	basePipelineHandle Pipeline
	basePipelineIndex  int32
}

type descriptorPoolSize struct {
	typ             uint32
	descriptorCount uint32
}

type descriptorPoolCreateInfo struct {
	sType         uint32
	pNext         unsafe.Pointer
	flags         uint32
	maxSets       uint32
	poolSizeCount uint32
	poolSizes     *descriptorPoolSize
}

type descriptorSetAllocateInfo struct {
	sType              uint32
	pNext              unsafe.Pointer
	pool               DescriptorPool
	descriptorSetCount uint32
	setLayouts         *DescriptorSetLayout
}

type descriptorBufferInfo struct {
	buffer Buffer
	offset uint64
	rng    uint64
}

type writeDescriptorSet struct {
	sType           uint32
	pNext           unsafe.Pointer
	dstSet          DescriptorSet
	dstBinding      uint32
	dstArrayElement uint32
	descriptorCount uint32
	descriptorType  uint32
	imageInfo       unsafe.Pointer
	bufferInfo      *descriptorBufferInfo
	texelBufferView unsafe.Pointer
}

type commandPoolCreateInfo struct {
	sType            uint32
	pNext            unsafe.Pointer
	flags            uint32
	queueFamilyIndex uint32
}

type commandBufferAllocateInfo struct {
	sType              uint32
	pNext              unsafe.Pointer
	pool               CommandPool
	level              uint32
	commandBufferCount uint32
}

type commandBufferBeginInfo struct {
	sType           uint32
	pNext           unsafe.Pointer
	flags           uint32
	inheritanceInfo unsafe.Pointer
}

type memoryBarrier struct {
	sType         uint32
	pNext         unsafe.Pointer
	srcAccessMask uint32
	dstAccessMask uint32
}

type bufferCopy struct {
	srcOffset, dstOffset, size uint64
}

type submitInfo struct {
	sType                uint32
	pNext                unsafe.Pointer
	waitSemaphoreCount   uint32
	waitSemaphores       unsafe.Pointer
	waitDstStageMask     unsafe.Pointer
	commandBufferCount   uint32
	commandBuffers       *CommandBuffer
	signalSemaphoreCount uint32
	signalSemaphores     unsafe.Pointer
}

type fenceCreateInfo struct {
	sType uint32
	pNext unsafe.Pointer
	flags uint32
}

type queryPoolCreateInfo struct {
	sType              uint32
	pNext              unsafe.Pointer
	flags              uint32
	queryType          uint32
	queryCount         uint32
	pipelineStatistics uint32
}

type layerProperties struct {
	name                  [256]byte
	specVersion           uint32
	implementationVersion uint32
	description           [256]byte
}

type extensionProperties struct {
	name        [256]byte
	specVersion uint32
}

type debugMessengerCreateInfo struct {
	sType           uint32
	pNext           unsafe.Pointer
	flags           uint32
	messageSeverity uint32
	messageType     uint32
	callback        uintptr
	userData        uintptr
}

// cstring returns a NUL-terminated copy of s.
func cstring(s string) *byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return &b[0]
}

// cstrings returns a C array of NUL-terminated strings (nil when empty).
func cstrings(ss []string) **byte {
	if len(ss) == 0 {
		return nil
	}
	out := make([]*byte, len(ss))
	for i, s := range ss {
		out[i] = cstring(s)
	}
	return &out[0]
}

// gostring reads a NUL-terminated string from a fixed array.
func gostring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// gostringPtr reads a NUL-terminated C string.
func gostringPtr(p *byte) string {
	if p == nil {
		return ""
	}
	var n int
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

func f32frombits(u uint32) float32 { return math.Float32frombits(u) }
