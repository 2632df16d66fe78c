/**
 * Chat templates of model folders (lib/hf/chat-template.ts) rendered with @huggingface/jinja:
 * Qwen2.5-VL's own template (test/fixtures/qwen2_5_vl/chat_template.json, as published with the
 * Qwen2.5-VL Instruct checkpoints) gives exactly the hand-written ChatML fallback
 * (processor.renderChat) on text, image and video messages; the lookup order follows
 * transformers' processors; broken templates are refused naming the file.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { chatTemplateFor, compileChatTemplate, findChatTemplate } from '../../lib/hf/chat-template';
import { renderChat, type ChatMessage } from '../../lib/hf/processor';

const FIXTURE = path.resolve(__dirname, '..', 'fixtures', 'qwen2_5_vl', 'chat_template.json');
const QWEN25_TEMPLATE = (JSON.parse(fs.readFileSync(FIXTURE, 'utf8')) as { chat_template: string }).chat_template;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-chat-template-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
function folder(files: Record<string, string>): string {
  const dir = path.join(tmp, `f${n++}`);
  fs.mkdirSync(dir);
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  return dir;
}

const QUESTION = 'Which way does it roll?\nA. left\nB. right';
const CASES: Record<string, ChatMessage[]> = {
  'text only (string content)': [{ role: 'user', content: 'Is the ball moving left?\nA. yes\nB. no' }],
  'text only (parts)': [{ role: 'user', content: [{ type: 'text', text: 'Hello' }] }],
  image: [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'What colour is the ball?' }] }],
  video: [{ role: 'user', content: [{ type: 'video' }, { type: 'text', text: QUESTION }] }],
  'image and video, text between': [
    {
      role: 'user',
      content: [{ type: 'image' }, { type: 'text', text: 'then' }, { type: 'video' }, { type: 'text', text: ' vs.' }],
    },
  ],
  'system, user, assistant, user': [
    { role: 'system', content: 'You answer with one letter.' },
    { role: 'user', content: [{ type: 'video' }, { type: 'text', text: 'Moving?' }] },
    { role: 'assistant', content: '<answer>A</answer>' },
    { role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'And now?' }] },
  ],
};

describe("Qwen2.5-VL's own chat template through @huggingface/jinja", () => {
  const qwen = compileChatTemplate(QWEN25_TEMPLATE, FIXTURE);
  for (const [name, messages] of Object.entries(CASES)) {
    test(`${name}: equal to the ChatML fallback, with and without the generation prompt`, () => {
      const t = qwen.render(messages);
      expect(t).toBe(renderChat('qwen2_5_vl', messages));
      expect(qwen.render(messages, false)).toBe(renderChat('qwen2_5_vl', messages, false));
      expect(t.endsWith('<|im_start|>assistant\n')).toBe(true);
    });
  }

  test('the video message renders to the exact text the model was trained on', () => {
    expect(qwen.render(CASES.video)).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' +
        `<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>${QUESTION}<|im_end|>\n` +
        '<|im_start|>assistant\n',
    );
  });
});

describe('where a folder keeps its template', () => {
  const custom = (tag: string) =>
    `{% for m in messages %}[${tag}:{{ m.role }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}`;
  const msgs: ChatMessage[] = [{ role: 'user', content: 'hi' }];

  test('tokenizer_config.json, then chat_template.json, then chat_template.jinja win in turn', () => {
    const tokenizerConfig = JSON.stringify({ chat_template: custom('tok'), eos_token: '<|im_end|>' });
    const files: Record<string, string> = { 'tokenizer_config.json': tokenizerConfig };
    let dir = folder(files);
    expect(chatTemplateFor(dir, 'qwen2_5_vl').render(msgs)).toBe('[tok:user]>');
    expect(findChatTemplate(dir)?.file).toBe(path.join(dir, 'tokenizer_config.json'));
    files['chat_template.json'] = JSON.stringify({ chat_template: custom('json') });
    dir = folder(files);
    expect(chatTemplateFor(dir, 'qwen2_5_vl').render(msgs)).toBe('[json:user]>');
    files['chat_template.jinja'] = custom('jinja');
    dir = folder(files);
    const t = chatTemplateFor(dir, 'qwen2_5_vl');
    expect(t.render(msgs, false)).toBe('[jinja:user]');
    expect(t.source).toBe(path.join(dir, 'chat_template.jinja'));
  });

  test("a list of named templates uses 'default'; special tokens of tokenizer_config.json are variables", () => {
    const dir = folder({
      'tokenizer_config.json': JSON.stringify({
        eos_token: { content: '<|im_end|>', lstrip: false },
        chat_template: [
          { name: 'tool_use', template: 'tools' },
          { name: 'default', template: '{{ messages[0].content }}{{ eos_token }}' },
        ],
      }),
    });
    expect(chatTemplateFor(dir, 'qwen3_vl').render(msgs)).toBe('hi<|im_end|>');
  });

  test('a folder without a template gets the hand-written ChatML of its architecture', () => {
    const dir = folder({ 'tokenizer_config.json': JSON.stringify({ eos_token: '<|im_end|>' }) });
    for (const arch of ['qwen2_5_vl', 'qwen3_vl'] as const) {
      const t = chatTemplateFor(dir, arch);
      expect(t.source).toBe('built-in ChatML');
      expect(t.render(CASES.video)).toBe(renderChat(arch, CASES.video));
    }
    expect(chatTemplateFor(folder({}), 'qwen3_vl').render(CASES.image)).toBe(renderChat('qwen3_vl', CASES.image));
  });

  test('broken templates and files are refused naming the file (ERR_CRPO_CHAT_TEMPLATE)', () => {
    const syntax = folder({ 'chat_template.jinja': '{% for m in messages %}{{ m.role }' });
    const parseError = new RegExp(`^${path.join(syntax, 'chat_template.jinja')}: the chat template does not parse \\(`);
    const want = expect.objectContaining({
      code: 'ERR_CRPO_CHAT_TEMPLATE',
      message: expect.stringMatching(parseError),
    });
    expect(() => chatTemplateFor(syntax, 'qwen2_5_vl')).toThrow(want as unknown as Error);
    const raising = JSON.stringify({ chat_template: "{{ raise_exception('only users') }}" });
    const raises = folder({ 'chat_template.json': raising });
    const failed = `${path.join(raises, 'chat_template.json')}: rendering the chat template failed: only users`;
    expect(() => chatTemplateFor(raises, 'qwen2_5_vl').render(msgs)).toThrow(failed);
    const notJson = folder({ 'chat_template.json': '{ nope' });
    const unreadable = new RegExp(`^${path.join(notJson, 'chat_template.json')}: cannot read it \\(`);
    expect(() => chatTemplateFor(notJson, 'qwen2_5_vl')).toThrow(unreadable);
    const wrongType = folder({ 'tokenizer_config.json': JSON.stringify({ chat_template: 42 }) });
    const notString = `${path.join(wrongType, 'tokenizer_config.json')}: chat_template must be a string but is 42`;
    expect(() => chatTemplateFor(wrongType, 'qwen2_5_vl')).toThrow(notString);
    const list = JSON.stringify({ chat_template: [{ name: 'rag', template: 'x' }] });
    const noDefault = folder({ 'tokenizer_config.json': list });
    const missing = "chat_template is a list of named templates without a 'default' one";
    expect(() => chatTemplateFor(noDefault, 'qwen2_5_vl')).toThrow(missing);
  });
});
