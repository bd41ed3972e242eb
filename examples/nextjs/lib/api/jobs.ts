// lib/api/jobs.ts

export async function cancelJob(jobId: string) {
  const response = await fetch(
    `${process.env.NEXT_PUBLIC_API_URL}/api/jobs/${jobId}/cancel`,
    {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
      },
    }
  );

  if (!response.ok) {
    throw new Error('Failed to cancel job');
  }

  return response.json();
}
