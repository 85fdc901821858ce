// Device pickers (camera, microphone, speaker) shared by the pre-join page and the meeting.

import { h } from './dom';

export type Kind = 'videoinput' | 'audioinput' | 'audiooutput';

export const KIND_LABEL: Record<Kind, string> = {
  videoinput: 'Camera',
  audioinput: 'Microphone',
  audiooutput: 'Speaker',
};

export function canPickSpeaker(): boolean {
  return 'setSinkId' in HTMLMediaElement.prototype;
}

export async function listDevices(kind: Kind): Promise<MediaDeviceInfo[]> {
  if (!navigator.mediaDevices?.enumerateDevices) return [];
  try {
    const all = await navigator.mediaDevices.enumerateDevices();
    return all.filter((d) => d.kind === kind && d.deviceId !== '');
  } catch {
    return [];
  }
}

/** A labelled <select> for `kind`; `onPick(id)` when the choice changes. */
export function devicePicker(
  kind: Kind,
  idPrefix: string,
  onPick: (deviceId: string) => void,
): { field: HTMLElement; fill: (selected?: string) => Promise<void> } {
  const id = `${idPrefix}-${kind}`;
  const select = h('select', { id, name: kind });
  select.addEventListener('change', () => onPick(select.value));
  const empty = h('p', { class: 'hint', hidden: true });
  const field = h('div', { class: 'field' }, h('label', { for: id, text: KIND_LABEL[kind] }), select, empty);
  const fill = async (selected?: string) => {
    const devices = kind === 'audiooutput' && !canPickSpeaker() ? [] : await listDevices(kind);
    select.replaceChildren(
      ...devices.map((d, i) => {
        const o = h('option', { value: d.deviceId, text: d.label || `${KIND_LABEL[kind]} ${i + 1}` });
        if (d.deviceId === selected) o.selected = true;
        return o;
      }),
    );
    select.disabled = devices.length === 0;
    select.hidden = devices.length === 0;
    empty.hidden = devices.length > 0;
    empty.textContent =
      kind === 'audiooutput' ? 'Sound plays on your system’s default speaker.' : `No ${KIND_LABEL[kind].toLowerCase()} found.`;
    if (devices.length === 0) field.querySelector('label')?.setAttribute('for', `${id}-none`);
    else field.querySelector('label')?.setAttribute('for', id);
  };
  return { field, fill };
}
