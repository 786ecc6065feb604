import { CreateLoraDownloadDocument, type LoraFieldsFragment } from '@lora-vault/sdk/documents';
import { useState } from 'react';
import { useMutation } from 'urql';

/**
 * The owner's Download: asks the API for a short-lived link (createLoraDownload) and navigates to
 * it; the API streams the file with `Content-Disposition: attachment` under the display name (no
 * token needed: the link is the capability), so the browser saves it and the page stays where it is.
 */
export function DownloadButton({ lora }: { lora: LoraFieldsFragment }) {
  const [error, setError] = useState<string | null>(null);
  const [state, createLink] = useMutation(CreateLoraDownloadDocument);
  const download = async () => {
    setError(null);
    const result = await createLink({ id: lora.id });
    const outcome = result.data?.createLoraDownload;
    if (outcome?.__typename === 'LoraDownloadLink') window.location.assign(outcome.url);
    else if (outcome?.__typename === 'NotFoundError') setError('This LoRA no longer exists.');
    else if (outcome && 'message' in outcome) setError(`Not downloaded: ${outcome.message}`);
    else setError(`Not downloaded: ${result.error?.graphQLErrors[0]?.message ?? result.error?.message ?? 'unknown error'}`);
  };
  return (
    <>
      <button type="button" className="button" disabled={state.fetching} onClick={() => void download()}>
        Download
      </button>
      {error && <p role="alert">{error}</p>}
    </>
  );
}
