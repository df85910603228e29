// Package vk is the small part of the Vulkan API that the engine's compute
// backend needs, called without cgo: libvulkan.so.1 is opened at run time
// with purego, so a binary built with CGO_ENABLED=0 runs on machines with
// and without a Vulkan loader. Such a binary still links the C library
// dynamically (purego imports dlopen from it); -tags novulkan leaves the
// backend out and gives a fully static binary (dl.go, dl_novulkan.go).
//
// The package mirrors the C API closely (handles, create/destroy pairs,
// command recording) and turns VkResult codes into errors. It owns no
// policy: choosing a device, placing buffers and scheduling work belong to
// package gpu.
package vk

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"
)

// ErrNoLoader means the Vulkan loader library could not be opened.
var ErrNoLoader = errors.New("vk: no Vulkan loader (libvulkan.so.1)")

// errNotBuilt is why Load fails in a binary built with -tags novulkan.
var errNotBuilt = errors.New("this binary was built with -tags novulkan (fully static, for images without a C library) and cannot open a Vulkan loader; use a build without that tag")

// Error is a failed Vulkan call.
type Error struct {
	Call   string
	Result Result
}

func (e *Error) Error() string { return fmt.Sprintf("vk: %s: %s", e.Call, e.Result) }

// String names a VkResult.
func (r Result) String() string {
	names := map[Result]string{
		Success: "VK_SUCCESS", NotReady: "VK_NOT_READY", Timeout: "VK_TIMEOUT", Incomplete: "VK_INCOMPLETE",
		ErrOutOfHostMemory: "VK_ERROR_OUT_OF_HOST_MEMORY", ErrOutOfDevMemory: "VK_ERROR_OUT_OF_DEVICE_MEMORY",
		ErrInitFailed: "VK_ERROR_INITIALIZATION_FAILED", ErrDeviceLost: "VK_ERROR_DEVICE_LOST",
		ErrLayerNotPresent: "VK_ERROR_LAYER_NOT_PRESENT", ErrExtNotPresent: "VK_ERROR_EXTENSION_NOT_PRESENT",
		ErrFeatureMissing: "VK_ERROR_FEATURE_NOT_PRESENT", ErrIncompatible: "VK_ERROR_INCOMPATIBLE_DRIVER",
	}
	if n, ok := names[r]; ok {
		return n
	}
	return fmt.Sprintf("VkResult(%d)", int32(r))
}

func check(call string, r Result) error {
	if r >= 0 {
		return nil
	}
	return &Error{Call: call, Result: r}
}

// The entry points, bound by Load.
var (
	vkCreateInstance                       func(info *instanceCreateInfo, alloc unsafe.Pointer, out *Instance) Result
	vkDestroyInstance                      func(i Instance, alloc unsafe.Pointer)
	vkEnumerateInstanceLayerProperties     func(count *uint32, props *layerProperties) Result
	vkEnumerateInstanceExtensionProperties func(layer *byte, count *uint32, props *extensionProperties) Result
	vkGetInstanceProcAddr                  func(i Instance, name string) uintptr
	vkEnumeratePhysicalDevices             func(i Instance, count *uint32, out *PhysicalDevice) Result
	vkGetPhysicalDeviceProperties2         func(pd PhysicalDevice, p *properties2)
	vkGetPhysicalDeviceFeatures2           func(pd PhysicalDevice, f *features2)
	vkGetPhysicalDeviceMemoryProperties2   func(pd PhysicalDevice, p *memoryProperties2)
	vkGetPhysicalDeviceQueueFamilyProps    func(pd PhysicalDevice, count *uint32, out *queueFamilyProperties)
	vkEnumerateDeviceExtensionProperties   func(pd PhysicalDevice, layer *byte, count *uint32, props *extensionProperties) Result
	vkCreateDevice                         func(pd PhysicalDevice, info *deviceCreateInfo, alloc unsafe.Pointer, out *Device) Result
	vkDestroyDevice                        func(d Device, alloc unsafe.Pointer)
	vkGetDeviceQueue                       func(d Device, family, index uint32, out *Queue)
	vkDeviceWaitIdle                       func(d Device) Result
	vkCreateBuffer                         func(d Device, info *bufferCreateInfo, alloc unsafe.Pointer, out *Buffer) Result
	vkDestroyBuffer                        func(d Device, b Buffer, alloc unsafe.Pointer)
	vkGetBufferMemoryRequirements          func(d Device, b Buffer, out *memoryRequirements)
	vkAllocateMemory                       func(d Device, info *memoryAllocateInfo, alloc unsafe.Pointer, out *DeviceMemory) Result
	vkFreeMemory                           func(d Device, m DeviceMemory, alloc unsafe.Pointer)
	vkBindBufferMemory                     func(d Device, b Buffer, m DeviceMemory, offset uint64) Result
	vkMapMemory                            func(d Device, m DeviceMemory, offset, size uint64, flags uint32, out *unsafe.Pointer) Result
	vkUnmapMemory                          func(d Device, m DeviceMemory)
	vkCreateShaderModule                   func(d Device, info *shaderModuleCreateInfo, alloc unsafe.Pointer, out *ShaderModule) Result
	vkDestroyShaderModule                  func(d Device, m ShaderModule, alloc unsafe.Pointer)
	vkCreateDescriptorSetLayout            func(d Device, info *setLayoutCreateInfo, alloc unsafe.Pointer, out *DescriptorSetLayout) Result
	vkDestroyDescriptorSetLayout           func(d Device, l DescriptorSetLayout, alloc unsafe.Pointer)
	vkCreatePipelineLayout                 func(d Device, info *pipelineLayoutCreateInfo, alloc unsafe.Pointer, out *PipelineLayout) Result
	vkDestroyPipelineLayout                func(d Device, l PipelineLayout, alloc unsafe.Pointer)
	vkCreateComputePipelines               func(d Device, cache uint64, count uint32, info *computePipelineCreateInfo, alloc unsafe.Pointer, out *Pipeline) Result
	vkDestroyPipeline                      func(d Device, p Pipeline, alloc unsafe.Pointer)
	vkCreateDescriptorPool                 func(d Device, info *descriptorPoolCreateInfo, alloc unsafe.Pointer, out *DescriptorPool) Result
	vkDestroyDescriptorPool                func(d Device, p DescriptorPool, alloc unsafe.Pointer)
	vkAllocateDescriptorSets               func(d Device, info *descriptorSetAllocateInfo, out *DescriptorSet) Result
	vkUpdateDescriptorSets                 func(d Device, writeCount uint32, writes *writeDescriptorSet, copyCount uint32, copies unsafe.Pointer)
	vkCreateCommandPool                    func(d Device, info *commandPoolCreateInfo, alloc unsafe.Pointer, out *CommandPool) Result
	vkDestroyCommandPool                   func(d Device, p CommandPool, alloc unsafe.Pointer)
	vkAllocateCommandBuffers               func(d Device, info *commandBufferAllocateInfo, out *CommandBuffer) Result
	vkBeginCommandBuffer                   func(c CommandBuffer, info *commandBufferBeginInfo) Result
	vkEndCommandBuffer                     func(c CommandBuffer) Result
	vkResetCommandBuffer                   func(c CommandBuffer, flags uint32) Result
	vkCmdBindPipeline                      func(c CommandBuffer, bindPoint uint32, p Pipeline)
	vkCmdBindDescriptorSets                func(c CommandBuffer, bindPoint uint32, l PipelineLayout, first, count uint32, sets *DescriptorSet, dynCount uint32, dyn unsafe.Pointer)
	vkCmdPushConstants                     func(c CommandBuffer, l PipelineLayout, stages, offset, size uint32, data unsafe.Pointer)
	vkCmdDispatch                          func(c CommandBuffer, x, y, z uint32)
	vkCmdDispatchIndirect                  func(c CommandBuffer, b Buffer, offset uint64)
	vkCmdPipelineBarrier                   func(c CommandBuffer, src, dst, deps uint32, memCount uint32, mem *memoryBarrier, bufCount uint32, buf unsafe.Pointer, imgCount uint32, img unsafe.Pointer)
	vkCmdCopyBuffer                        func(c CommandBuffer, src, dst Buffer, count uint32, regions *bufferCopy)
	vkCmdFillBuffer                        func(c CommandBuffer, b Buffer, offset, size uint64, data uint32)
	vkCmdWriteTimestamp                    func(c CommandBuffer, stage uint32, pool QueryPool, query uint32)
	vkCmdResetQueryPool                    func(c CommandBuffer, pool QueryPool, first, count uint32)
	vkCreateQueryPool                      func(d Device, info *queryPoolCreateInfo, alloc unsafe.Pointer, out *QueryPool) Result
	vkDestroyQueryPool                     func(d Device, p QueryPool, alloc unsafe.Pointer)
	vkGetQueryPoolResults                  func(d Device, p QueryPool, first, count uint32, size uintptr, data unsafe.Pointer, stride uint64, flags uint32) Result
	vkCreateFence                          func(d Device, info *fenceCreateInfo, alloc unsafe.Pointer, out *Fence) Result
	vkDestroyFence                         func(d Device, f Fence, alloc unsafe.Pointer)
	vkWaitForFences                        func(d Device, count uint32, fences *Fence, waitAll uint32, timeout uint64) Result
	vkResetFences                          func(d Device, count uint32, fences *Fence) Result
	vkQueueSubmit                          func(q Queue, count uint32, info *submitInfo, fence Fence) Result
)

var (
	loadOnce sync.Once
	loadErr  error
)

// Load opens the Vulkan loader once. The library is MOE_VULKAN_LIBRARY
// when set, else libvulkan.so.1 from the system's search path.
func Load() error {
	loadOnce.Do(func() { loadErr = load() })
	return loadErr
}

func load() (err error) {
	if runtime.GOOS != "linux" && runtime.GOOS != "freebsd" {
		return fmt.Errorf("%w: the Vulkan backend runs on Linux and FreeBSD, not %s", ErrNoLoader, runtime.GOOS)
	}
	if !Built {
		return fmt.Errorf("%w: %v", ErrNoLoader, errNotBuilt)
	}
	name := "libvulkan.so.1"
	if p := os.Getenv("MOE_VULKAN_LIBRARY"); p != "" {
		name = p
	}
	lib, derr := dlopen(name)
	if derr != nil {
		return fmt.Errorf("%w: %v (install the Vulkan loader, e.g. Debian's libvulkan1, and a driver: the GPU vendor's, or mesa-vulkan-drivers for the CPU)", ErrNoLoader, derr)
	}
	defer func() {
		if r := recover(); r != nil { // RegisterLibFunc panics on a missing symbol
			err = fmt.Errorf("%w: %s lacks a Vulkan 1.2 entry point: %v", ErrNoLoader, name, r)
		}
	}()
	bind := func(fptr any, sym string) { bindFunc(fptr, lib, sym) }
	bind(&vkCreateInstance, "vkCreateInstance")
	bind(&vkDestroyInstance, "vkDestroyInstance")
	bind(&vkEnumerateInstanceLayerProperties, "vkEnumerateInstanceLayerProperties")
	bind(&vkEnumerateInstanceExtensionProperties, "vkEnumerateInstanceExtensionProperties")
	bind(&vkGetInstanceProcAddr, "vkGetInstanceProcAddr")
	bind(&vkEnumeratePhysicalDevices, "vkEnumeratePhysicalDevices")
	bind(&vkGetPhysicalDeviceProperties2, "vkGetPhysicalDeviceProperties2")
	bind(&vkGetPhysicalDeviceFeatures2, "vkGetPhysicalDeviceFeatures2")
	bind(&vkGetPhysicalDeviceMemoryProperties2, "vkGetPhysicalDeviceMemoryProperties2")
	bind(&vkGetPhysicalDeviceQueueFamilyProps, "vkGetPhysicalDeviceQueueFamilyProperties")
	bind(&vkEnumerateDeviceExtensionProperties, "vkEnumerateDeviceExtensionProperties")
	bind(&vkCreateDevice, "vkCreateDevice")
	bind(&vkDestroyDevice, "vkDestroyDevice")
	bind(&vkGetDeviceQueue, "vkGetDeviceQueue")
	bind(&vkDeviceWaitIdle, "vkDeviceWaitIdle")
	bind(&vkCreateBuffer, "vkCreateBuffer")
	bind(&vkDestroyBuffer, "vkDestroyBuffer")
	bind(&vkGetBufferMemoryRequirements, "vkGetBufferMemoryRequirements")
	bind(&vkAllocateMemory, "vkAllocateMemory")
	bind(&vkFreeMemory, "vkFreeMemory")
	bind(&vkBindBufferMemory, "vkBindBufferMemory")
	bind(&vkMapMemory, "vkMapMemory")
	bind(&vkUnmapMemory, "vkUnmapMemory")
	bind(&vkCreateShaderModule, "vkCreateShaderModule")
	bind(&vkDestroyShaderModule, "vkDestroyShaderModule")
	bind(&vkCreateDescriptorSetLayout, "vkCreateDescriptorSetLayout")
	bind(&vkDestroyDescriptorSetLayout, "vkDestroyDescriptorSetLayout")
	bind(&vkCreatePipelineLayout, "vkCreatePipelineLayout")
	bind(&vkDestroyPipelineLayout, "vkDestroyPipelineLayout")
	bind(&vkCreateComputePipelines, "vkCreateComputePipelines")
	bind(&vkDestroyPipeline, "vkDestroyPipeline")
	bind(&vkCreateDescriptorPool, "vkCreateDescriptorPool")
	bind(&vkDestroyDescriptorPool, "vkDestroyDescriptorPool")
	bind(&vkAllocateDescriptorSets, "vkAllocateDescriptorSets")
	bind(&vkUpdateDescriptorSets, "vkUpdateDescriptorSets")
	bind(&vkCreateCommandPool, "vkCreateCommandPool")
	bind(&vkDestroyCommandPool, "vkDestroyCommandPool")
	bind(&vkAllocateCommandBuffers, "vkAllocateCommandBuffers")
	bind(&vkBeginCommandBuffer, "vkBeginCommandBuffer")
	bind(&vkEndCommandBuffer, "vkEndCommandBuffer")
	bind(&vkResetCommandBuffer, "vkResetCommandBuffer")
	bind(&vkCmdBindPipeline, "vkCmdBindPipeline")
	bind(&vkCmdBindDescriptorSets, "vkCmdBindDescriptorSets")
	bind(&vkCmdPushConstants, "vkCmdPushConstants")
	bind(&vkCmdDispatch, "vkCmdDispatch")
	bind(&vkCmdDispatchIndirect, "vkCmdDispatchIndirect")
	bind(&vkCmdPipelineBarrier, "vkCmdPipelineBarrier")
	bind(&vkCmdCopyBuffer, "vkCmdCopyBuffer")
	bind(&vkCmdFillBuffer, "vkCmdFillBuffer")
	bind(&vkCmdWriteTimestamp, "vkCmdWriteTimestamp")
	bind(&vkCmdResetQueryPool, "vkCmdResetQueryPool")
	bind(&vkCreateQueryPool, "vkCreateQueryPool")
	bind(&vkDestroyQueryPool, "vkDestroyQueryPool")
	bind(&vkGetQueryPoolResults, "vkGetQueryPoolResults")
	bind(&vkCreateFence, "vkCreateFence")
	bind(&vkDestroyFence, "vkDestroyFence")
	bind(&vkWaitForFences, "vkWaitForFences")
	bind(&vkResetFences, "vkResetFences")
	bind(&vkQueueSubmit, "vkQueueSubmit")
	return nil
}

// InstanceLayers lists the instance layers the loader can enable.
func InstanceLayers() []string {
	var n uint32
	if vkEnumerateInstanceLayerProperties(&n, nil) < 0 || n == 0 {
		return nil
	}
	props := make([]layerProperties, n)
	if vkEnumerateInstanceLayerProperties(&n, &props[0]) < 0 {
		return nil
	}
	var out []string
	for _, p := range props[:n] {
		out = append(out, gostring(p.name[:]))
	}
	return out
}

// InstanceExtensions lists the instance extensions.
func InstanceExtensions() []string {
	var n uint32
	if vkEnumerateInstanceExtensionProperties(nil, &n, nil) < 0 || n == 0 {
		return nil
	}
	props := make([]extensionProperties, n)
	if vkEnumerateInstanceExtensionProperties(nil, &n, &props[0]) < 0 {
		return nil
	}
	var out []string
	for _, p := range props[:n] {
		out = append(out, gostring(p.name[:]))
	}
	return out
}

// CreateInstance creates an instance for API version 1.2 with the given
// layers and extensions enabled.
func CreateInstance(app string, layers, extensions []string) (Instance, error) {
	ai := &applicationInfo{sType: stApplicationInfo, appName: cstring(app), engineName: cstring("moe"), apiVersion: MakeVersion(1, 2, 0)}
	ci := &instanceCreateInfo{sType: stInstanceCreateInfo, appInfo: ai,
		enabledLayerCount: uint32(len(layers)), enabledLayerNames: cstrings(layers),
		enabledExtensionCount: uint32(len(extensions)), enabledExtensionNames: cstrings(extensions)}
	var inst Instance
	if err := check("vkCreateInstance", vkCreateInstance(ci, nil, &inst)); err != nil {
		return 0, err
	}
	return inst, nil
}

// Destroy destroys the instance.
func (i Instance) Destroy() { vkDestroyInstance(i, nil) }

// PhysicalDevices lists the instance's devices.
func (i Instance) PhysicalDevices() ([]PhysicalDevice, error) {
	var n uint32
	if err := check("vkEnumeratePhysicalDevices", vkEnumeratePhysicalDevices(i, &n, nil)); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	out := make([]PhysicalDevice, n)
	if err := check("vkEnumeratePhysicalDevices", vkEnumeratePhysicalDevices(i, &n, &out[0])); err != nil {
		return nil, err
	}
	return out[:n], nil
}

// DebugMessage is one message from the validation layers.
type DebugMessage struct {
	Severity uint32
	Text     string
}

var (
	debugMu       sync.Mutex
	debugSinks    = map[uintptr]func(DebugMessage){}
	debugNext     uintptr
	debugCallback uintptr
)

// debugTrampoline receives VK_EXT_debug_utils messages; user data is the
// sink's key. It always returns VK_FALSE, so the call goes on.
func debugTrampoline(severity, types uint32, data unsafe.Pointer, user uintptr) uint32 {
	msg := (*byte)(*(*unsafe.Pointer)(unsafe.Add(data, 40)))
	debugMu.Lock()
	sink := debugSinks[user]
	debugMu.Unlock()
	if sink != nil {
		sink(DebugMessage{Severity: severity, Text: gostringPtr(msg)})
	}
	return 0
}

// CreateDebugMessenger routes warnings and errors of the instance's
// validation layers to sink. The instance must have been created with
// VK_EXT_debug_utils.
func (i Instance) CreateDebugMessenger(sink func(DebugMessage)) (DebugMessenger, error) {
	create := vkGetInstanceProcAddr(i, "vkCreateDebugUtilsMessengerEXT")
	if create == 0 {
		return 0, &Error{Call: "vkGetInstanceProcAddr(vkCreateDebugUtilsMessengerEXT)", Result: ErrExtNotPresent}
	}
	debugMu.Lock()
	if debugCallback == 0 {
		debugCallback = newCallback(debugTrampoline) // callbacks are never freed: make one
	}
	debugNext++
	key := debugNext
	debugSinks[key] = sink
	debugMu.Unlock()
	ci := &debugMessengerCreateInfo{sType: stDebugMessengerCreateInfo,
		messageSeverity: DebugSeverityWarning | DebugSeverityError,
		messageType:     DebugTypeGeneral | DebugTypeValidation | DebugTypePerformance,
		callback:        debugCallback, userData: key}
	var m DebugMessenger
	r := callN(create, uintptr(i), uintptr(unsafe.Pointer(ci)), 0, uintptr(unsafe.Pointer(&m)))
	runtime.KeepAlive(ci)
	if err := check("vkCreateDebugUtilsMessengerEXT", Result(int32(r))); err != nil {
		return 0, err
	}
	return m, nil
}

// DestroyDebugMessenger destroys a messenger made by CreateDebugMessenger.
func (i Instance) DestroyDebugMessenger(m DebugMessenger) {
	if destroy := vkGetInstanceProcAddr(i, "vkDestroyDebugUtilsMessengerEXT"); destroy != 0 && m != 0 {
		callN(destroy, uintptr(i), uintptr(m), 0)
	}
}
