'use client';

// The page around the seed's component: it creates a job on the server of
// NEXT_PUBLIC_API_URL, polls GET /api/jobs/{id} every 500 ms and renders
// <ImageGenerationProgress> with what it reads. The cancel is the
// component's own (useJobCancel -> cancelJob, both unchanged from the seed).
// Query parameters size the job: ?images=10&size=256&steps=40.
import { useEffect, useState } from 'react';
import { ImageGenerationProgress } from '@/components/ImageGenerationProgress';

type Job = {
  job_id: string;
  job_status: string;
  completed_images: number;
  total_images: number;
  generated_attach_ids: string[];
};

const API = process.env.NEXT_PUBLIC_API_URL;
const FINAL = ['completed', 'failed', 'user_cancelled'];

function param(name: string, fallback: number): number {
  const v = Number(new URLSearchParams(window.location.search).get(name));
  return Number.isInteger(v) && v > 0 ? v : fallback;
}

export default function Home() {
  const [job, setJob] = useState<Job | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [cancelled, setCancelled] = useState(false);

  const create = async () => {
    setError(null);
    const size = param('size', 256);
    const res = await fetch(`${API}/api/jobs`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        prompt: 'a lighthouse on a stormy coast at dusk',
        combinations: [{ seed: 1 }, { seed: 2, style: 'oil painting' }],
        images_per_combination: param('images', 10),
        width: size,
        height: size,
        steps: param('steps', 40),
      }),
    });
    const body = await res.json();
    if (res.status !== 201) {
      setError(body.error ?? `HTTP ${res.status}`);
      return;
    }
    setJob({ ...body, completed_images: 0, generated_attach_ids: [] });
  };

  const id = job?.job_id;
  const done = job ? FINAL.includes(job.job_status) : false;
  useEffect(() => {
    if (!id || done) return;
    const timer = setInterval(async () => {
      const res = await fetch(`${API}/api/jobs/${id}`);
      if (res.ok) setJob(await res.json());
    }, 500);
    return () => clearInterval(timer);
  }, [id, done]);

  return (
    <main className="space-y-4">
      <h1 className="text-xl font-bold">imagejobs · Next.js</h1>
      {!job && (
        <button id="create" onClick={create} className="px-4 py-2 bg-blue-600 text-white rounded">
          이미지 생성 시작
        </button>
      )}
      {error && <p id="error" className="text-red-600">{error}</p>}
      {job && (
        <>
          <ImageGenerationProgress
            jobId={job.job_id}
            completedImages={job.completed_images}
            totalImages={job.total_images}
            status={job.job_status}
            onCancelled={() => setCancelled(true)}
          />
          <p id="status" data-status={job.job_status}>
            {job.job_id}: {job.job_status}
          </p>
          {cancelled && <p id="cancel-sent">취소 요청을 보냈습니다.</p>}
          {done && (
            <p id="kept" data-kept={job.generated_attach_ids.length}>
              {job.generated_attach_ids.length} / {job.total_images} images kept
            </p>
          )}
          <div className="grid grid-cols-4 gap-2">
            {job.generated_attach_ids.map((a) => (
              // eslint-disable-next-line @next/next/no-img-element
              <img key={a} src={`${API}/api/attachments/${a}`} alt={a} className="w-full rounded" />
            ))}
          </div>
        </>
      )}
    </main>
  );
}
