package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
)

// Message is one chat turn.
type Message struct {
	Role    string // "system", "user", "assistant" or "tool"
	Content string
	// ToolCalls, on an assistant turn, is its calls as Mistral writes them: a JSON array
	// of {"name", "arguments", "id"}. ToolCallID, on a tool turn, names the call it
	// answers.
	ToolCalls  string
	ToolCallID string
}

// ChatFormat names a chat template the engine renders natively.
type ChatFormat string

// Chat formats.
const (
	// ChatUnknown: the model's template is absent or not one the engine
	// recognises.
	ChatUnknown ChatFormat = ""
	// ChatMistralV1 is the template of Mistral-7B-Instruct-v0.1/v0.2 and
	// Mixtral-8x7B-Instruct-v0.1, rendered by MistralV1Chat.
	ChatMistralV1 ChatFormat = "mistral-v1"
)

// DetectChatFormat recognises a Jinja chat template. The Mistral v1 family
// writes "[INST] " + content + " [/INST]" as plain text (with spaces inside
// the brackets' quotes) and has no tool-call tokens; later Mistral templates
// (v3, Tekken) use [AVAILABLE_TOOLS] / [TOOL_CALLS] control tokens and no
// spaces, and are not recognised.
func DetectChatFormat(template string) ChatFormat {
	t := strings.Join(strings.Fields(template), " ")
	if !strings.Contains(t, "[INST]") || !strings.Contains(t, "[/INST]") ||
		strings.Contains(t, "[AVAILABLE_TOOLS]") || strings.Contains(t, "[TOOL_CALLS]") {
		return ChatUnknown
	}
	for _, close := range []string{"' [/INST]'", "\" [/INST]\"", "' [/INST]"} {
		if strings.Contains(t, close) {
			return ChatMistralV1
		}
	}
	return ChatUnknown
}

// ChatFormat returns the format of the vocabulary's chat template.
func (t *Tokenizer) ChatFormat() ChatFormat { return DetectChatFormat(t.v.ChatTemplate) }

// ErrChat reports a conversation the template cannot render.
var ErrChat = errors.New("tokenizer: invalid conversation")

// ErrTooLong reports a text or conversation over the caller's token limit.
var ErrTooLong = errors.New("tokenizer: more tokens than the limit")

// MistralV1Chat renders a conversation with the Mistral v1 chat template of
// Mixtral-8x7B-Instruct, as mistral-common tokenizes it:
//
//	<s>[INST] user [/INST] answer</s>[INST] next [/INST]
//
// "[INST]" is plain text, and each turn is tokenized on its own (so each
// gets SentencePiece's dummy prefix). A system message, if any, must come
// first; its text goes before the first user message followed by a blank
// line. Turns must alternate user/assistant and end with a user turn.
func (t *Tokenizer) MistralV1Chat(msgs []Message) ([]int32, error) {
	return t.MistralV1ChatLimit(msgs, math.MaxInt)
}

// MistralV1ChatLimit is MistralV1Chat that gives up with ErrTooLong once
// the conversation takes more than limit tokens, without encoding the rest
// (see EncodeLimit).
func (t *Tokenizer) MistralV1ChatLimit(msgs []Message, limit int) ([]int32, error) {
	var system string
	if len(msgs) > 0 && msgs[0].Role == "system" {
		system = msgs[0].Content
		msgs = msgs[1:]
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("%w: no user message", ErrChat)
	}
	ids := []int32{t.v.BOS}
	// Bytes are counted before any encoding: text that cannot fit costs nothing.
	size := 0
	for _, m := range msgs {
		size += len(m.Content)
	}
	size += len(system)
	tooLong := func() error {
		return fmt.Errorf("%w: the messages take more than %d tokens", ErrTooLong, limit)
	}
	if t.MinTokens(size)+1 > limit {
		return nil, tooLong()
	}
	encode := func(text string) bool {
		more, ok := t.EncodeLimit(text, false, limit-len(ids))
		ids = append(ids, more...)
		return ok
	}
	for i, m := range msgs {
		want := "user"
		if i%2 == 1 {
			want = "assistant"
		}
		if m.Role != want {
			if m.Role == "system" {
				return nil, fmt.Errorf("%w: a system message must come first (message %d)", ErrChat, i)
			}
			return nil, fmt.Errorf("%w: message %d has role %q, want %q (turns must alternate user/assistant, starting with user)", ErrChat, i, m.Role, want)
		}
		if want == "user" {
			content := m.Content
			if i == 0 && system != "" {
				content = system + "\n\n" + content
			}
			if !encode("[INST] " + content + " [/INST]") {
				return nil, tooLong()
			}
		} else {
			if !encode(m.Content) {
				return nil, tooLong()
			}
			ids = append(ids, t.v.EOS)
		}
	}
	if msgs[len(msgs)-1].Role != "user" {
		return nil, fmt.Errorf("%w: the last message must be from the user", ErrChat)
	}
	if len(ids) > limit {
		return nil, tooLong()
	}
	return ids, nil
}

// MistralToolChat renders a conversation with tools in the text form of Mistral's tool
// template (v3), for models whose vocabulary has no control tokens for it:
//
//	<s>[INST] user [/INST] answer</s>[AVAILABLE_TOOLS] [...][/AVAILABLE_TOOLS][INST] last user [/INST]
//	[TOOL_CALLS] [{"name":...,"arguments":{...},"id":...}]</s>[TOOL_RESULTS] {"content":...,"call_id":...}[/TOOL_RESULTS]
//
// tools (a JSON array of OpenAI function tools) goes before the last user turn. A tool
// turn must follow an assistant turn with tool calls or another tool turn, and the
// conversation ends with a user or tool turn. Without tools or tool turns it is
// MistralV1ChatLimit.
func (t *Tokenizer) MistralToolChat(msgs []Message, tools string, limit int) ([]int32, error) {
	plain := tools == ""
	for _, m := range msgs {
		plain = plain && m.Role != "tool" && m.ToolCalls == ""
	}
	if plain {
		return t.MistralV1ChatLimit(msgs, limit)
	}
	var system string
	if len(msgs) > 0 && msgs[0].Role == "system" {
		system = msgs[0].Content
		msgs = msgs[1:]
	}
	if len(msgs) == 0 || msgs[0].Role != "user" {
		return nil, fmt.Errorf("%w: the first message (after a system message) must be from the user", ErrChat)
	}
	lastUser := 0
	for i, m := range msgs {
		if m.Role == "user" {
			lastUser = i
		}
	}
	ids := []int32{t.v.BOS}
	tooLong := func() error {
		return fmt.Errorf("%w: the messages take more than %d tokens", ErrTooLong, limit)
	}
	encode := func(text string) bool {
		more, ok := t.EncodeLimit(text, false, limit-len(ids))
		ids = append(ids, more...)
		return ok
	}
	prev := ""
	for i, m := range msgs {
		ok := true
		switch m.Role {
		case "user":
			if prev == "user" {
				return nil, fmt.Errorf("%w: message %d: two user messages in a row", ErrChat, i)
			}
			content := m.Content
			if i == 0 && system != "" {
				content = system + "\n\n" + content
			}
			if i == lastUser && tools != "" {
				ok = encode("[AVAILABLE_TOOLS] " + tools + "[/AVAILABLE_TOOLS]")
			}
			ok = ok && encode("[INST] "+content+" [/INST]")
		case "assistant":
			if prev != "user" && prev != "tool" {
				return nil, fmt.Errorf("%w: message %d: an assistant message must follow a user or tool message", ErrChat, i)
			}
			if m.ToolCalls != "" {
				ok = encode("[TOOL_CALLS] " + m.ToolCalls)
			} else {
				ok = encode(m.Content)
			}
			ids = append(ids, t.v.EOS)
		case "tool":
			if prev != "tool" && !(prev == "assistant" && msgs[i-1].ToolCalls != "") {
				return nil, fmt.Errorf("%w: message %d: a tool message must follow an assistant message with tool_calls", ErrChat, i)
			}
			result, _ := json.Marshal(struct {
				Content string `json:"content"`
				CallID  string `json:"call_id"`
			}{m.Content, m.ToolCallID})
			ok = encode("[TOOL_RESULTS] " + string(result) + "[/TOOL_RESULTS]")
		case "system":
			return nil, fmt.Errorf("%w: a system message must come first (message %d)", ErrChat, i)
		default:
			return nil, fmt.Errorf("%w: message %d has role %q; roles are system, user, assistant and tool", ErrChat, i, m.Role)
		}
		if !ok {
			return nil, tooLong()
		}
		prev = m.Role
	}
	if prev != "user" && prev != "tool" {
		return nil, fmt.Errorf("%w: the last message must be from the user or a tool", ErrChat)
	}
	if len(ids) > limit {
		return nil, tooLong()
	}
	return ids, nil
}
