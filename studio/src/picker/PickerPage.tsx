import { useState } from 'react';
import { BASE_MODELS } from '../config.ts';
import { LoraPicker, type LoraSelection } from './LoraPicker.tsx';

/** A stand-in for the workflow editor: choose the workflow's base model, pick a LoRA, see what the picker emits. */
export function PickerPage() {
  const [baseModel, setBaseModel] = useState<string>('SDXL');
  const [selection, setSelection] = useState<LoraSelection | null>(null);
  return (
    <section className="picker-page" aria-labelledby="picker-heading">
      <h2 id="picker-heading">LoRA picker</h2>
      <p>The component a workflow editor embeds: it emits the inputs of the LoRA loader node for the LoRA you pick.</p>
      <div className="field">
        <label htmlFor="workflow-base-model">This workflow's base model</label>
        <select id="workflow-base-model" value={baseModel} onChange={(e) => setBaseModel(e.target.value)}>
          {BASE_MODELS.filter((m) => m !== 'UNKNOWN').map((m) => (
            <option key={m} value={m}>
              {m}
            </option>
          ))}
        </select>
      </div>
      <LoraPicker baseModel={baseModel} onPick={setSelection} />
      <h3>Emitted</h3>
      <output data-testid="picker-output" className="output">
        {selection ? JSON.stringify(selection) : 'nothing picked yet'}
      </output>
    </section>
  );
}
