import './globals.css';
import type { ReactNode } from 'react';

export const metadata = {
  title: 'imagejobs — the seed’s Next.js client',
  icons: { icon: 'data:,' }, // no favicon to fetch (and no 404 on the console)
};

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="ko">
      <body className="max-w-xl mx-auto p-4">{children}</body>
    </html>
  );
}
