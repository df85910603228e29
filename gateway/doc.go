// Package gateway is `moe gateway`: one OpenAI-compatible endpoint in front of the engine
// replicas of many models. It routes each request by its "model" to a replica chosen by
// consistent hashing of the prompt's prefix with bounded load (so repeated system prompts
// land where their KV blocks already are, and no replica takes more than its share), reading
// the engines' load from their vLLM-named /metrics. A request that fails before its first
// byte is retried once on another replica; streams pass through chunk by chunk.
//
// The gateway knows engines only through HTTP and their metrics, never their Go packages,
// so it fronts `moe serve` and vLLM alike.
package gateway
