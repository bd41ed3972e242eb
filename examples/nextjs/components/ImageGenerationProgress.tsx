// components/ImageGenerationProgress.tsx

import { useJobCancel } from '@/hooks/useJobCancel';

interface Props {
  jobId: string;
  completedImages: number;
  totalImages: number;
  status: string;
  onCancelled: () => void;
}

export function ImageGenerationProgress({
  jobId,
  completedImages,
  totalImages,
  status,
  onCancelled
}: Props) {
  const { cancel, isCancelling } = useJobCancel();

  const handleCancel = async () => {
    if (confirm('진행 중인 이미지 생성을 취소하시겠습니까?\n이미 생성된 이미지는 유지됩니다.')) {
      try {
        await cancel(jobId);
        onCancelled();
      } catch (error) {
        alert('취소 요청에 실패했습니다.');
      }
    }
  };

  return (
    <div className="p-4 border rounded-lg">
      <div className="flex justify-between items-center mb-2">
        <span>이미지 생성 중...</span>
        <span>{completedImages} / {totalImages}</span>
      </div>

      <div className="w-full bg-gray-200 rounded-full h-2 mb-4">
        <div
          className="bg-blue-600 h-2 rounded-full transition-all"
          style={{ width: `${(completedImages / totalImages) * 100}%` }}
        />
      </div>

      {status === 'processing' && (
        <button
          onClick={handleCancel}
          disabled={isCancelling}
          className="px-4 py-2 bg-red-500 text-white rounded hover:bg-red-600 disabled:opacity-50"
        >
          {isCancelling ? '취소 중...' : '생성 취소'}
        </button>
      )}
    </div>
  );
}
