// hooks/useJobCancel.ts

import { useState } from 'react';
import { cancelJob } from '@/lib/api/jobs';

export function useJobCancel() {
  const [isCancelling, setIsCancelling] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const cancel = async (jobId: string) => {
    setIsCancelling(true);
    setError(null);

    try {
      const result = await cancelJob(jobId);

      if (result.success) {
        // 취소 성공 - 이미 생성된 이미지들은 유지됨
        console.log(`Job cancelled. ${result.completed_images} images saved.`);
        return result;
      } else {
        // 이미 완료/취소된 상태
        console.log(result.message);
        return result;
      }
    } catch (err) {
      setError(err instanceof Error ? err.message : 'Unknown error');
      throw err;
    } finally {
      setIsCancelling(false);
    }
  };

  return { cancel, isCancelling, error };
}
