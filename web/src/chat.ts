// Chat over the room's reliable data channel (topic "chat"): a JSON message {text} per packet;
// the server stamps the sender's identity, the receiver looks up the name.

import { type RemoteParticipant, type Room, RoomEvent } from 'livekit-client';

import { h, toast } from './dom';

export const CHAT_TOPIC = 'chat';
const MAX_CHARS = 2000;

export class Chat {
  readonly panel: HTMLElement;
  open = false;
  unread = 0;
  private readonly log: HTMLOListElement;
  private readonly input: HTMLInputElement;
  private readonly encoder = new TextEncoder();
  private readonly decoder = new TextDecoder();

  constructor(
    private readonly room: Room,
    private readonly changed: () => void,
  ) {
    this.log = h('ol', { class: 'messages', 'aria-live': 'polite', 'aria-relevant': 'additions' });
    this.input = h('input', {
      id: 'chat-input',
      autocomplete: 'off',
      maxlength: String(MAX_CHARS),
      placeholder: 'Message everyone',
    });
    const empty = h('li', { class: 'hint empty', text: 'Messages are seen by everyone in the meeting now, and are not kept.' });
    this.log.append(empty);
    this.panel = h(
      'aside',
      { id: 'chat', class: 'chat', 'aria-labelledby': 'chat-h', hidden: true },
      h(
        'header',
        {},
        h('h2', { id: 'chat-h', text: 'Chat' }),
        h('button', {
          type: 'button',
          class: 'small quiet',
          text: 'Close',
          'aria-label': 'Close chat',
          onclick: () => this.toggle(false),
        }),
      ),
      this.log,
      h(
        'form',
        {
          class: 'send',
          onsubmit: (e: Event) => {
            e.preventDefault();
            void this.send();
          },
        },
        h('label', { for: 'chat-input', class: 'visually-hidden', text: 'Message' }),
        this.input,
        h('button', { type: 'submit', class: 'primary small', text: 'Send' }),
      ),
    );
    room.on(RoomEvent.DataReceived, (payload: Uint8Array, from?: RemoteParticipant, _kind?: unknown, topic?: string) => {
      if (topic !== CHAT_TOPIC) return;
      let text: unknown;
      try {
        text = (JSON.parse(this.decoder.decode(payload)) as { text?: unknown }).text;
      } catch {
        return;
      }
      if (typeof text !== 'string' || !text) return;
      const name = from ? from.name || from.identity : 'Someone';
      this.add(name, text.slice(0, MAX_CHARS), false);
      if (!this.open) {
        this.unread += 1;
        toast(`${name}: ${text.length > 80 ? `${text.slice(0, 80)}…` : text}`);
        this.changed();
      }
    });
  }

  toggle(open = !this.open): void {
    this.open = open;
    this.panel.hidden = !open;
    if (open) {
      this.unread = 0;
      this.input.focus();
      this.log.lastElementChild?.scrollIntoView({ block: 'end' });
    }
    this.changed();
    if (!open) document.querySelector<HTMLElement>('.controls [aria-controls="chat"]')?.focus();
  }

  private async send(): Promise<void> {
    const text = this.input.value.trim().slice(0, MAX_CHARS);
    if (!text) return;
    try {
      await this.room.localParticipant.publishData(this.encoder.encode(JSON.stringify({ text })), {
        reliable: true,
        topic: CHAT_TOPIC,
      });
      this.input.value = '';
      const me = this.room.localParticipant;
      this.add(me.name || me.identity, text, true);
    } catch (e) {
      toast(`The message was not sent${e instanceof Error ? ` (${e.message})` : ''}. Try again.`, 8000);
    }
  }

  private add(name: string, text: string, mine: boolean): void {
    this.log.querySelector('.empty')?.remove();
    const now = new Date();
    this.log.append(
      h(
        'li',
        { class: mine ? 'mine' : '' },
        h(
          'div',
          { class: 'from' },
          h('span', { class: 'who', text: mine ? `${name} (you)` : name }),
          h('time', {
            datetime: now.toISOString(),
            text: now.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' }),
          }),
        ),
        h('p', { text }),
      ),
    );
    this.log.lastElementChild?.scrollIntoView({ block: 'end' });
  }
}
